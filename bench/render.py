"""Render docs/benchmarks/*.md from the saved results files, so that a rerun updates the tables.

    python bench/render.py            # every page whose results file exists

Pages: answers.md (bench/answers.py -> results/answers.json, results/verifier.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks"
RESULTS = DOCS / "results"

ANSWER_COLUMNS = [("contains", "contains a reference"), ("f1", "F1"), ("refused_unanswerable", "refused unanswerable"),
                  ("false_refusals", "false refusals"), ("language_match", "answer language"),
                  ("page_match", "cited page"), ("ttft_ms_p50", "first shown token p50 (s)"),
                  ("total_ms_p50", "whole answer p50 (s)")]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key.endswith("_ms_p50"):
        return f"{value / 1000:.1f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _provenance(result: dict[str, Any], name: str) -> str:
    return (f"From `docs/benchmarks/results/{name}` (commit {result.get('commit', '?')}, {result.get('date', '?')}, "
            f"{result.get('machine', '?')}), written by:\n\n```bash\n{result.get('command', '?')}\n```\n")


def answers_page() -> str | None:
    path = RESULTS / "answers.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text(encoding="utf-8"))
    lines = ["# Answers: Consulta against the plain RAG prompt", "",
             "Same questions, same retrieval (Consulta's top-k), same bundled model; `consulta` is the assistant as "
             "shipped, `plain` the quick-start prompt (\"Use the following pieces of retrieved context to answer the "
             "question. If you don't know the answer, say that you don't know.\"). Rates are shares of the "
             "answerable, unanswerable or answered questions (bench/answers.py says which); times are one user, "
             "questions asked one at a time.", "", _provenance(result, "answers.json"),
             "| set | system | questions (unanswerable) | " + " | ".join(t for _, t in ANSWER_COLUMNS) + " |",
             "|---|---|---|" + "---:|" * len(ANSWER_COLUMNS)]
    for name, systems in result["results"].items():
        for system, s in systems.items():
            cells = " | ".join(_cell(k, s.get(k)) for k, _ in ANSWER_COLUMNS)
            lines.append(f"| {name} | {system} | {s['n']} ({s['unanswerable']}) | {cells} |")
    verifier = RESULTS / "verifier.json"
    if verifier.exists():
        v = json.loads(verifier.read_text(encoding="utf-8"))
        lines += ["", "## The answerability verifier alone", "",
                  "Refusal rates of the verifier by itself (before the model writes) on the test articles and the "
                  "golden sets; it was fitted on other articles (train) and its threshold chosen on others again "
                  "(dev).", "", _provenance(v, "verifier.json"),
                  "| set | examples | refused unanswerable | false refusals | by kind (refused) |",
                  "|---|---:|---:|---:|---|"]
        for name, s in v["test"].items():
            kinds = ", ".join(f"{k} {d['refused']:.2f} of {d['n']}" for k, d in s["by_kind"].items())
            lines.append(f"| {name} | {s['n']} | {_cell('', s['refused_unanswerable'])} | "
                         f"{_cell('', s['false_refusals'])} | {kinds} |")
        lines += ["", "Weights (standardised features): " + ", ".join(f"{k} {w:+.2f}" for k, w in v["weights"].items())
                  + f"; threshold {v['fitted']['threshold']:.3f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    pages = {"answers.md": answers_page()}
    for name, text in pages.items():
        if text is None:
            continue
        (DOCS / name).write_text(text, encoding="utf-8")
        print(f"wrote {DOCS / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
