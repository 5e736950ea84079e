"""docs/benchmarks/ is rendered from the results files: a page edited by hand, or a results file rerun without
rendering, fails here (fix: `python bench/render.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import render

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "benchmarks"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("benchmarks")
    render.main(["--out", str(out)])
    return out


def test_every_committed_page_is_what_the_render_script_writes(rendered: Path) -> None:
    pages = sorted(p.name for p in rendered.glob("*.md"))
    assert set(pages) == set(render.PAGES), "every page's results files must be committed"
    committed = sorted(p.name for p in DOCS.glob("*.md"))
    assert committed == pages, "a page in docs/benchmarks/ that no results file renders"
    for name in pages:
        assert (DOCS / name).read_text(encoding="utf-8") == (rendered / name).read_text(encoding="utf-8"), (
            f"docs/benchmarks/{name} is stale or edited by hand: run `python bench/render.py`")


def test_every_results_file_says_where_its_figures_come_from() -> None:
    files = sorted((DOCS / "results").glob("*.json"))
    assert files
    for path in files:
        result = json.loads(path.read_text(encoding="utf-8"))
        for entry in result.get("tables", [result]):
            missing = {"command", "commit", "date", "machine"} - set(entry)
            assert not missing, f"{path.name}: {entry.get('title', '')} lacks {missing}"
        if "tables" in result:
            assert "transcribed" in result["source"] or "measured" in result["source"], path.name
            for t in result["tables"]:
                assert all(len(row) == len(t["columns"]) for row in t["rows"]), (path.name, t["title"])


def test_the_readme_headline_table_is_the_rendered_one() -> None:
    table = render.headline()
    assert table is not None
    assert table in (REPO / "README.md").read_text(encoding="utf-8"), (
        "the README's headline table differs from results/answers.json: run `python bench/render.py`")
