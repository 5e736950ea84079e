"""Consulta's answers against the plain RAG quick-start prompt, on the same questions, retrieval and model.

    python bench/answers.py [--sets golden-ca,golden-es,xquad-es,xquad-en,squad2] [--per-kind 10]
                            [--systems consulta,plain] [--out docs/benchmarks/results/answers.json] [--resume]

For each question both systems get the same top-k from Consulta's own retriever and the same bundled model
(default settings). (a) `consulta`: the assistant as shipped (verifier, prompt in the question's language,
checked draft, citations). (b) `plain`: the prompt most RAG quick-starts use ("Use the following pieces of
retrieved context to answer the question. If you don't know the answer, say that you don't know.") over the
same passages, as one user message; its "sources" are the passages in order, so its cited page is the first
passage's. Questions are asked one at a time (one user), the two systems in turn, so their times compare.

Per set and language: answer contains a reference (answerable questions), token F1, refusals of unanswerable
questions, false refusals, answer language = question language (answered questions), cited page = evidence page
(answered answerable questions: the evidence page, or a QA set's gold passage), the citation check (the share of
shown citations whose passage holds a reference answer, and the same among those the check passed), time to
first shown token and to the whole answer.
Only test articles of the QA sets are asked (the verifier was fitted on the others; bench/qa_sets.py); the golden
sets are asked whole. Each answered question is appended to <out>.rows.jsonl as it finishes; --resume reuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.container import Services  # noqa: E402
from app.grounding import language_of, says_it_does_not_know  # noqa: E402
from app.prompts import PLAIN_RAG  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.qa_sets import Question, data_dir, questions, resumed_rows, sample  # noqa: E402
from eval import metrics as M  # noqa: E402
from retrieval.language import detect_language  # noqa: E402
from serving.generator import SamplingParams  # noqa: E402


def ask_consulta(services: Services, q: Question) -> dict[str, Any]:
    t0 = time.perf_counter()
    shown: float | None = None
    answer = None
    for event, payload in services.assistant.stream(q.question, language=q.language):
        if event == "token" and shown is None:
            shown = (time.perf_counter() - t0) * 1000
        elif event == "done":
            answer = payload
    assert answer is not None
    pages = [(c.source, c.page) for c in answer.citations]
    shown_citations = [{"n": c.n, "supported": c.supported,
                        "holds_reference": bool(M.contains_answer(c.text, q.answers))} for c in answer.citations]
    return {"answer": answer.text, "refused": answer.refused, "cited": pages, "citations": shown_citations,
            "ttft_ms": shown,
            "total_ms": (time.perf_counter() - t0) * 1000, "reason": answer.usage.get("reason"),
            "draft": answer.usage.get("draft"), "verifier": answer.usage.get("verifier")}


def ask_plain(services: Services, q: Question, k: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    hits = services.retriever.retrieve(q.question, k, None, language=q.language)
    context = "\n\n".join(h.chunk.text.strip() for h in hits)
    prompt = PLAIN_RAG.format(question=q.question, context=context)
    gen = services.generator.stream([{"role": "user", "content": prompt}],
                                    SamplingParams(max_tokens=services.settings.serving.max_tokens, temperature=0.0))
    first, parts = None, []
    for delta in gen:
        if first is None:
            first = (time.perf_counter() - t0) * 1000
        parts.append(delta)
    text = "".join(parts).strip()
    return {"answer": text, "refused": says_it_does_not_know(text),
            "cited": [(h.chunk.source, h.chunk.page) for h in hits[:1]],
            "citations": [{"n": 1, "supported": None, "holds_reference": bool(M.contains_answer(h.chunk.text,
                                                                                                q.answers))}
                          for h in hits[:1]], "ttft_ms": first,
            "total_ms": (time.perf_counter() - t0) * 1000}


def score(q: Question, row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if q.answerable and not row["refused"]:
        out["contains"] = M.contains_answer(row["answer"], q.answers)
        out["f1"] = M.token_f1(row["answer"], q.answers)
    elif q.answerable:
        out["contains"], out["f1"] = 0.0, 0.0
    if not row["refused"]:
        said = language_of(row["answer"]) or detect_language(row["answer"], default="?")
        out["language_match"] = float(said == q.language)
        if q.answerable and q.page is not None:
            out["page_match"] = float(any(src.rsplit("/", 1)[-1] == q.source and page == q.page
                                          for src, page in row["cited"]))
        elif q.answerable and q.gold_passages:  # a QA set: the cited passage is the gold one
            out["page_match"] = float(any(Path(src).stem in q.gold_passages for src, _ in row["cited"]))
        citations = row.get("citations") or []
        if q.answerable and citations:  # does a shown citation hold what answers the question?
            out["citation_holds"] = sum(c["holds_reference"] for c in citations) / len(citations)
            checked = [c for c in citations if c["supported"]]
            if checked:  # of the citations the check passed, the share that hold a reference
                out["checked_citation_holds"] = sum(c["holds_reference"] for c in checked) / len(checked)
    return out


def _p50(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(M.percentile(present, 0.5), 1) if present else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str, sel: list[dict[str, Any]]) -> float | None:
        vals = [r["scores"][key] for r in sel if key in r["scores"]]
        return round(sum(vals) / len(vals), 3) if vals else None

    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    return {
        "n": len(rows), "answerable": len(answerable), "unanswerable": len(unanswerable),
        "contains": mean("contains", answerable), "f1": mean("f1", answerable),
        "refused_unanswerable": round(sum(r["refused"] for r in unanswerable) / len(unanswerable), 3)
        if unanswerable else None,
        "false_refusals": round(sum(r["refused"] for r in answerable) / len(answerable), 3) if answerable else None,
        "language_match": mean("language_match", rows), "page_match": mean("page_match", rows),
        "citation_holds": mean("citation_holds", answerable),
        "checked_citation_holds": mean("checked_citation_holds", answerable),
        "ttft_ms_p50": _p50([r["ttft_ms"] for r in rows]),
        "total_ms_p50": _p50([r["total_ms"] for r in rows]),
        "failed": sum(1 for r in rows if r.get("error")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/consulta-bench"))
    ap.add_argument("--sets", default="golden-ca,golden-es,xquad-es,xquad-en,squad2")
    ap.add_argument("--systems", default="consulta,plain")
    ap.add_argument("--per-kind", type=int, default=10, help="answerable (and unanswerable) test questions per QA set")
    ap.add_argument("--limit", type=int, default=None, help="at most this many questions per set")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/results/answers.json"))
    ap.add_argument("--resume", action="store_true",
                    help="reuse the rows of an earlier run (only missing ones are asked)")
    args = ap.parse_args()
    rows_file = args.out.with_suffix(".rows.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["set"], r["system"], r["id"]): r for r in resumed_rows(rows_file, args.resume)}
    systems = args.systems.split(",")
    t0 = time.perf_counter()
    rows = list(done.values())
    with rows_file.open("a", encoding="utf-8") as sink:
        for name in args.sets.split(","):
            qs = questions(args.data, name)
            chosen = qs if name.startswith("golden-") else sample(qs, "test", args.per_kind)
            chosen = chosen[:args.limit] if args.limit else chosen
            services = Services(Settings(data_dir=data_dir(args.data, name, args.work)))
            k = services.settings.retrieval.k
            for q in chosen:
                for system in systems:
                    if (name, system, q.id) in done:
                        continue
                    try:
                        row = ask_consulta(services, q) if system == "consulta" else ask_plain(services, q, k)
                    except Exception as e:  # noqa: BLE001 - one bad question must not lose the run
                        row = {"answer": "", "refused": False, "cited": [], "ttft_ms": None, "total_ms": None,
                               "error": f"{type(e).__name__}: {e}"}
                    row.update({"set": name, "system": system, "id": q.id, "question": q.question,
                                "language": q.language, "answerable": q.answerable, "references": q.answers[:3]})
                    row["scores"] = score(q, row) if not row.get("error") else {}
                    rows.append(row)
                    sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                    sink.flush()
                    print(f"[{name} {system}] {q.id} refused={row['refused']} {row['scores']} "
                          f"{(row['answer'] or '')[:90]!r}", file=sys.stderr)
            services.close()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"command": "python " + " ".join(sys.argv), "commit": commit, "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "seconds": round(time.perf_counter() - t0),
              "model": Settings().serving.model, "k": Settings().retrieval.k,
              "results": {name: {system: summarise([r for r in rows if r["set"] == name and r["system"] == system])
                                 for system in systems} for name in args.sets.split(",")}}
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
