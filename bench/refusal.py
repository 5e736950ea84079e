"""Negative rejection on SQuAD 2.0 (half of its questions unanswerable from their article), per model.

    flock /tmp/consulta-cpu.lock python bench/refusal.py [--models qwen2.5-coder-1.5b,qwen2.5-coder-0.5b]
                                                         [--articles 4] [--per-kind 40] [--json]

It ingests the passages of a few articles into a fresh index and asks sampled answerable and unanswerable
questions through the real assistant (retrieval, prompt, batching engine). For every question it records
three signals of "the documents don't answer this":
  - the model's own refusal (NO_ANSWER) under the answering prompt;
  - the answer check: logP(no) - logP(yes) of the model asked "do the sources state the answer?";
  - the best passage's e5 relevance (the calibrated retrieval threshold).
It then reports, per model, the refusal rates on answerable (false refusals; goal <= 10%) and unanswerable
(goal >= 90%) questions of: the model alone, the model plus the answer check at the margin chosen on one
half of the questions (the calibration half: the margin with the most unanswerable refusals while false
refusals stay <= 10%) and measured on the other half, and the retrieval threshold alone likewise.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import threading
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


def sample(data: Path, articles: int, per_kind: int, seed: int):
    folder = data / "qa" / "squad2-en-half"
    passages = {p["_id"]: p for p in map(json.loads, (folder / "passages.jsonl").open(encoding="utf-8"))}
    qa = [json.loads(line) for line in (folder / "qa.jsonl").open(encoding="utf-8")]
    rng = random.Random(seed)
    titles = sorted({p["title"] for p in passages.values()})
    rng.shuffle(titles)
    chosen = set(titles[:articles])
    corpus = {pid: p for pid, p in passages.items() if p["title"] in chosen}
    items = []
    for impossible in (False, True):
        pool = [q for q in qa if q["is_impossible"] == impossible and q["gold_passage_ids"][0] in corpus]
        rng.shuffle(pool)
        items += [{"question": q["question"], "answers": q["answers"], "impossible": impossible}
                  for q in pool[:per_kind]]
    rng.shuffle(items)
    return corpus, items


def rates(rows, refused) -> dict:
    ans = [r for r in rows if not r["impossible"]]
    imp = [r for r in rows if r["impossible"]]
    return {"false_refusal": round(sum(map(refused, ans)) / max(1, len(ans)), 3),
            "unanswerable_refusal": round(sum(map(refused, imp)) / max(1, len(imp)), 3),
            "answerable": len(ans), "unanswerable": len(imp)}


def calibrate(rows, key: str, candidates, base=lambda r: False) -> float | None:
    """The threshold with the most unanswerable refusals while false refusals stay <= 10% (on `rows`)."""
    best, best_imp = None, -1.0
    for t in candidates:
        r = rates(rows, lambda x, t=t: base(x) or x[key] > t)
        if r["false_refusal"] <= 0.10 and r["unanswerable_refusal"] > best_imp:
            best, best_imp = t, r["unanswerable_refusal"]
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--models", default="qwen2.5-coder-1.5b,qwen2.5-coder-0.5b")
    ap.add_argument("--articles", type=int, default=4)
    ap.add_argument("--per-kind", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64, help="answers are cut here (only refusal matters)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--models-dir", default="/tmp/t1/data/models" if Path("/tmp/t1/data/models").is_dir() else None,
                    help="where the bundled models were assembled (default: each run assembles its own)")
    ap.add_argument("--rows", help="write every question, answer and signal to this JSONL file")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--summarise", metavar="ROWS", help="only summarise a --rows file of an earlier run")
    args = ap.parse_args()
    if args.summarise:
        rows = [json.loads(line) for line in open(args.summarise, encoding="utf-8")]
        for model in dict.fromkeys(r["model"] for r in rows):
            print(json.dumps(summarise(model, [r for r in rows if r["model"] == model]), indent=1))
        return
    write_lock = threading.Lock()

    if not (Path(args.data) / "qa" / "squad2-en-half").is_dir():
        sys.exit(f"no SQuAD 2.0 set under {args.data}/qa/squad2-en-half")
    corpus, items = sample(Path(args.data), args.articles, args.per_kind, args.seed)
    work = Path(tempfile.mkdtemp(prefix="consulta-refusal-"))
    if args.models_dir:  # bundled models assembled already: no second copy
        (work / "models").symlink_to(Path(args.models_dir).resolve())
    docs = work / "docs"
    docs.mkdir()
    for pid, p in corpus.items():
        (docs / (re.sub(r"[^\w.-]", "_", pid) + ".txt")).write_text(f"{p['title']}\n\n{p['text']}", encoding="utf-8")
    base = Settings(data_dir=work, serving={"max_sequences": args.concurrency, "n_ctx": 2048 * args.concurrency,
                                            "max_tokens": args.max_tokens})
    Services(base).pipeline.ingest([docs], "bench")
    print(f"{len(corpus)} passages, {len(items)} questions", file=sys.stderr)

    results = []
    for model in args.models.split(","):
        settings = base.model_copy(update={"serving": base.serving.model_copy(update={"model": model})})
        services = Services(settings)
        assistant = services.assistant
        k = assistant.settings.k

        def ask(item):
            row = _ask(item)
            if args.rows:
                with write_lock, open(args.rows, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            return row

        def _ask(item):
            a = assistant.answer(item["question"])
            hits = assistant.retriever.retrieve(item["question"], k, None)
            relevant = [h for h in hits if h.relevance >= assistant.settings.min_score]
            check = assistant.answer_check(item["question"], relevant[:len(a.sources)]) if relevant else 99.0
            return {**item, "model": model, "refused": a.refused, "check": round(check, 3),
                    "top_relevance": round(max((h.relevance for h in hits), default=0.0), 4),
                    "correct": (not a.refused) and any(norm(x) in norm(a.text) for x in item["answers"]),
                    "answer": a.text}

        t = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            rows = list(pool.map(ask, items))
        wall = time.perf_counter() - t
        services.close()
        res = summarise(model, rows)
        res["wall_s"] = round(wall, 1)
        results.append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"results": results, "articles": args.articles, "per_kind": args.per_kind,
                          "seed": args.seed}, indent=1))


def summarise(model: str, rows: list[dict]) -> dict:
    by_kind = [[r for r in rows if r["impossible"] == kind] for kind in (False, True)]
    calib = [r for group in by_kind for r in group[0::2]]  # each half holds half of each kind
    test = [r for group in by_kind for r in group[1::2]]
    margins = [x / 4 for x in range(-24, 25)]
    margin = calibrate(calib, "check", margins, base=lambda r: r["refused"])
    neg_calib = [dict(r, neg_relevance=-r["top_relevance"]) for r in calib]
    neg_test = [dict(r, neg_relevance=-r["top_relevance"]) for r in test]
    rel_cut = calibrate(neg_calib, "neg_relevance", sorted({-r["top_relevance"] for r in rows}))
    res = {"model": model, "questions": len(rows),
           "model_alone": rates(rows, lambda r: r["refused"]),
           "check_alone_at_0": rates(rows, lambda r: r["check"] > 0),
           "model_plus_check": {"margin": margin, "calibration_half": rates(
               calib, lambda r: r["refused"] or (margin is not None and r["check"] > margin)),
               "test_half": rates(test, lambda r: r["refused"] or (margin is not None and r["check"] > margin))},
           "retrieval_threshold": {"min_relevance": None if rel_cut is None else -rel_cut,
                                   "test_half": rates(neg_test, lambda r: rel_cut is not None
                                                      and r["neg_relevance"] > rel_cut)},
           "answerable_accuracy": round(sum(r["correct"] for r in rows if not r["impossible"])
                                        / max(1, sum(not r["impossible"] for r in rows)), 3)}
    return res


if __name__ == "__main__":
    main()
