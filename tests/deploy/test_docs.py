"""The README is the front door: short, and every link in it and in docs/ leads to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _local_links(path: Path) -> list[str]:
    links = (m.group(1).split("#")[0] for m in LINK.finditer(path.read_text(encoding="utf-8")))
    return [link for link in links if link and not re.match(r"[a-z]+:", link)]


def test_readme_is_under_12_kb() -> None:
    assert README.stat().st_size < 12_000, f"README.md is {README.stat().st_size} bytes: figures go to docs/benchmarks/"


def test_readme_keeps_the_two_commands_that_ci_runs() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make run" in text and "make test" in text
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_links_in_the_readme_and_docs_resolve() -> None:
    files = [README, *sorted((REPO / "docs").rglob("*.md"))]
    broken = [f"{f.relative_to(REPO)}: {link}" for f in files for link in _local_links(f)
              if not (f.parent / link).exists()]
    assert not broken, broken
    assert _local_links(README), "the README links to the docs"
