"""Which chunker retrieves the evidence page? FinanceBench-dev questions through Consulta's own ingest and search.

    flock /tmp/consulta-cpu.lock python bench/chunkers.py [--data ../shared/data] [--distractors 8]
        [--chunkers recursive,semantic,double_pass,sentence_window] [--context-header on|off|both]
        [--k 10] [--json]

For each FinanceBench-dev PDF the bench writes a smaller PDF holding its questions' evidence pages plus
`--distractors` other pages of the same filing (fixed seed), so that each chunker is measured on the same
pages in minutes rather than hours (the whole 2,400 pages take about 40 minutes a chunker to embed on 2
cores). Each chunker ingests them with the real pipeline (`consulta ingest` settings otherwise default:
e5, hybrid search) into a temporary index; each question is searched with the real Retriever. Hits are
mapped back to (filing, original page) and de-duplicated by page; a hit is relevant when it is an evidence
page. Prints per chunker: nDCG@10, hit rate @1/@5/@10 (share of questions with an evidence page in the top
k), MRR@10, chunk count and ingest seconds, as JSON. `--context-header both` measures each chunker with and
without the line naming each chunk's document and section (`CONSULTA_INGEST__CONTEXT_HEADER`). Reads the
data from ../shared/data; never copies it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.container import Services  # noqa: E402
from app.settings import Settings  # noqa: E402


def load_questions(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "qa.jsonl").read_text().splitlines() if line.strip()]


def build_subset(root: Path, questions: list[dict], out: Path, distractors: int, seed: int = 13) -> dict:
    """Write one PDF per filing with its evidence pages and some others; returns {(file, sub_page): orig_page}."""
    from pypdf import PdfReader, PdfWriter

    rng = random.Random(seed)
    wanted: dict[str, set[int]] = {}
    for q in questions:
        for ev in q["evidence"]:
            wanted.setdefault(ev["doc_name"], set()).add(int(ev["page_num_0based"]))
    mapping: dict[tuple[str, int], int] = {}
    for name, pages in sorted(wanted.items()):
        reader = PdfReader(str(root / "pdfs" / f"{name}.pdf"))
        others = [p for p in range(len(reader.pages)) if p not in pages]
        chosen = sorted(pages | set(rng.sample(others, min(distractors, len(others)))))
        writer = PdfWriter()
        for p in chosen:
            writer.add_page(reader.pages[p])
        path = out / f"{name}.pdf"
        with open(path, "wb") as f:
            writer.write(f)
        for sub, orig in enumerate(chosen, start=1):
            mapping[(str(path.resolve()), sub)] = orig
    return mapping


def score(ranked: list[tuple[str, int]], relevant: set[tuple[str, int]], k: int) -> dict[str, float]:
    seen: list[tuple[str, int]] = []
    for r in ranked:
        if r not in seen:
            seen.append(r)
    seen = seen[:k]
    gains = [1.0 if r in relevant else 0.0 for r in seen]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    first = next((i for i, g in enumerate(gains) if g), None)
    return {"ndcg@10": dcg / idcg if idcg else 0.0, "hit@1": float(bool(gains[:1] and gains[0])),
            "hit@5": float(any(gains[:5])), "hit@10": float(any(gains[:10])),
            "mrr@10": 1.0 / (first + 1) if first is not None else 0.0}


def run(chunker: str, pdf_dir: Path, mapping: dict, questions: list[dict], k: int,
        context_header: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="consulta-chunkers-") as tmp:
        services = Services(Settings(data_dir=Path(tmp), ingest={"chunker": chunker,
                                                                 "context_header": context_header}))
        t = time.perf_counter()
        report = services.pipeline.ingest([pdf_dir], "financebench")
        ingest_s = time.perf_counter() - t
        totals: dict[str, float] = {}
        for q in questions:
            relevant = {(ev["doc_name"], int(ev["page_num_0based"])) for ev in q["evidence"]}
            hits = services.retriever.retrieve(q["question"], k=max(k, 10) * 3)
            ranked = [(Path(h.chunk.source).stem, mapping[(h.chunk.source, h.chunk.page)]) for h in hits]
            for name, value in score(ranked, relevant, k).items():
                totals[name] = totals.get(name, 0.0) + value
        n = len(questions)
        chunks = services.store.chunks()
        return {"chunker": chunker, "context_header": context_header,
                "settings_id": services.chunker.settings_id, "questions": n,
                **{name: round(v / n, 4) for name, v in totals.items()},
                "chunks": len(chunks), "mean_chunk_chars": round(sum(len(c.text) for c in chunks) / len(chunks)),
                "pages": report.pages, "ingest_s": round(ingest_s, 1),
                "timings": {name: round(v, 1) for name, v in report.timings.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--distractors", type=int, default=8, help="other pages kept from each filing")
    ap.add_argument("--chunkers", default="recursive,semantic,double_pass,sentence_window")
    ap.add_argument("--context-header", choices=["on", "off", "both"], default="on",
                    help="index chunks with their document/section line (the default), without, or both in turn")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print only the JSON results")
    args = ap.parse_args()
    root = args.data / "pdf" / "financebench-dev"
    if not root.is_dir():
        sys.exit(f"no FinanceBench-dev data at {root}")
    questions = load_questions(root)
    results = []
    with tempfile.TemporaryDirectory(prefix="consulta-fb-") as tmp:
        pdf_dir = Path(tmp)
        mapping = build_subset(root, questions, pdf_dir, args.distractors)
        pages = len(mapping)
        headers = {"on": [True], "off": [False], "both": [False, True]}[args.context_header]
        for name in args.chunkers.split(","):
            for header in headers:
                r = run(name.strip(), pdf_dir, mapping, questions, args.k, header)
                results.append(r)
                if not args.json:
                    print(json.dumps(r), file=sys.stderr, flush=True)
    print(json.dumps({"set": "financebench-dev", "pages": pages, "distractors_per_filing": args.distractors,
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
