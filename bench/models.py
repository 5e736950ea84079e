"""Which bundled answering model should be the default? End-to-end RAG answers on ../shared/data.

    python bench/models.py [--models qwen2.5-coder-1.5b,qwen2.5-coder-0.5b,smollm2-135m]
                           [--articles 2] [--per-kind 12] [--json]

For SQuAD 2.0 (English, half of its questions unanswerable from their article) and XQuAD (Spanish), it
ingests the passages of a few articles into a fresh index, asks sampled questions through the real
assistant (retrieval, prompt, batching engine), and reports per model:
  - answerable accuracy: the answer contains a reference answer (normalised), and is not a refusal
  - false refusals on answerable questions, refusals on unanswerable ones (negative rejection)
  - citation hit: a cited chunk comes from the question's gold passage
  - latency: time to first token and total, p50, and the answering tokens/s
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.container import Services  # noqa: E402
from app.settings import Settings  # noqa: E402


def norm(s: str) -> str:
    s = unicodedata.normalize("NFKD", s.lower())
    s = "".join(c for c in s if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w\s]", " ", s).split())


def load(folder: Path):
    passages = {p["_id"]: p for p in map(json.loads, (folder / "passages.jsonl").open(encoding="utf-8"))}
    qa = [json.loads(line) for line in (folder / "qa.jsonl").open(encoding="utf-8")]
    return passages, qa


def sample(data: Path, articles: int, per_kind: int, seed: int):
    rng = random.Random(seed)
    items = []
    corpus: dict[str, dict] = {}
    for name, lang, kinds in (("qa/squad2-en-half", "en", (False, True)), ("qa/xquad/es", "es", (False,))):
        passages, qa = load(data / name)
        titles = sorted({p["title"] for p in passages.values()})
        rng.shuffle(titles)
        chosen = set(titles[:articles])
        for pid, p in passages.items():
            if p["title"] in chosen:
                corpus[f"{lang}:{pid}"] = p
        for impossible in kinds:
            pool = [q for q in qa if q["is_impossible"] == impossible
                    and passages[q["gold_passage_ids"][0]]["title"] in chosen]
            rng.shuffle(pool)
            n = per_kind if lang == "en" else max(4, per_kind * 2 // 3)
            for q in pool[:n]:
                items.append({"lang": lang, "question": q["question"], "answers": q["answers"],
                              "impossible": impossible, "gold": [f"{lang}:{g}" for g in q["gold_passage_ids"]]})
    return corpus, items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--models", default="qwen2.5-coder-1.5b,qwen2.5-coder-0.5b,smollm2-135m")
    ap.add_argument("--articles", type=int, default=2)
    ap.add_argument("--per-kind", type=int, default=12)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", default=None, help="reuse an index folder between runs")
    ap.add_argument("--rows", help="also write every question, answer and verdict to this JSONL file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    corpus, items = sample(Path(args.data), args.articles, args.per_kind, args.seed)
    work = Path(args.data_dir or tempfile.mkdtemp(prefix="consulta-bench-"))
    docs = work / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, str] = {}
    for key, p in corpus.items():
        f = docs / (re.sub(r"[^\w.-]", "_", key) + ".txt")
        if not f.exists():
            f.write_text(f"{p['title']}\n\n{p['text']}", encoding="utf-8")
        by_file[str(f.resolve())] = key
    base = Settings(data_dir=work, serving={"max_sequences": args.concurrency, "n_ctx": 2048 * args.concurrency})
    t = time.perf_counter()
    report = Services(base).pipeline.ingest([docs], "bench")
    print(f"ingested {len(corpus)} passages in {time.perf_counter() - t:.1f}s "
          f"({report.chunks_added} new chunks)", file=sys.stderr)

    results = []
    for model in args.models.split(","):
        settings = base.model_copy(update={"serving": base.serving.model_copy(update={"model": model})})
        services = Services(settings)
        assistant = services.assistant  # loads the model

        def ask(item):
            a = assistant.answer(item["question"])
            gold_hit = any(by_file.get(c.source) in item["gold"] for c in a.citations)
            correct = (not a.refused) and any(norm(ans) in norm(a.text) for ans in item["answers"])
            return {**item, "refused": a.refused, "best_score": round(max((s.score for s in a.sources), default=0), 3),
                    "correct": correct, "citation_hit": gold_hit,
                    "ttft_ms": a.timings.get("ttft_ms"), "total_ms": a.timings["total_ms"],
                    "tokens": a.usage.get("completion_tokens", 0), "answer": a.text}

        t = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            rows = list(pool.map(ask, items))
        wall = time.perf_counter() - t
        services.close()
        ans = [r for r in rows if not r["impossible"]]
        en_ans = [r for r in ans if r["lang"] == "en"]
        es_ans = [r for r in ans if r["lang"] == "es"]
        imp = [r for r in rows if r["impossible"]]
        ttfts = [r["ttft_ms"] for r in rows if r["ttft_ms"]]
        res = {
            "model": model, "questions": len(rows),
            "en_accuracy": round(sum(r["correct"] for r in en_ans) / max(1, len(en_ans)), 3),
            "es_accuracy": round(sum(r["correct"] for r in es_ans) / max(1, len(es_ans)), 3),
            "false_refusal_rate": round(sum(r["refused"] for r in ans) / max(1, len(ans)), 3),
            "unanswerable_refusal_rate": round(sum(r["refused"] for r in imp) / max(1, len(imp)), 3),
            "citation_hit_rate": round(sum(r["citation_hit"] for r in ans if not r["refused"])
                                       / max(1, sum(not r["refused"] for r in ans)), 3),
            "ttft_p50_ms": round(statistics.median(ttfts)) if ttfts else None,
            "total_p50_ms": round(statistics.median(r["total_ms"] for r in rows)),
            "answer_tok_s": round(sum(r["tokens"] for r in rows) / wall, 1),
            "wall_s": round(wall, 1), "concurrency": args.concurrency,
        }
        results.append(res)
        if args.rows:
            with open(args.rows, "a", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps({"model": model, **r}, ensure_ascii=False) + "\n")
        print(json.dumps(res), file=sys.stderr, flush=True)
        for r in rows[:3]:
            print("   ", r["lang"], r["question"][:60], "->", r["answer"][:100].replace("\n", " "), file=sys.stderr)
    if args.json:
        print(json.dumps({"results": results, "en_answerable": sum(not i["impossible"] and i["lang"] == "en"
                                                                    for i in items),
                          "en_unanswerable": sum(i["impossible"] for i in items),
                          "es_answerable": sum(i["lang"] == "es" for i in items)}, indent=1))


if __name__ == "__main__":
    main()
