"""BM25 alone, dense alone and hybrid (reciprocal rank fusion) through Consulta's own retrieval path.

    python bench/hybrid.py [--data ../shared/data] [--sets xquad-en,...] [--embedder e5] [--max-queries 300]
                           [--modes bm25,dense,hybrid] [--candidates 20] [--rrf-k 60] [--json]

Each set's passages go into a real FaissStore (a temporary folder, published like `consulta ingest`
does, BM25 included) and are searched with the real Retriever; passage languages are detected like
ingestion does, query languages like the assistant does. Prints nDCG@10, MRR@10, recall@10 and the
search latency per query (p50/p95, ms), which excludes embedding the query: that cost is the same in
every mode (BM25 mode embeds too, for the cosine the refusal threshold reads) and is printed apart
(embed_ms). Embedding the passages is slow on 2 cores, so the vectors are cached under
--cache (default /tmp/consulta-bench) per set and embedder; reruns take seconds. Reads the evaluation
data from ../shared/data; the project never copies it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embedders import SETS as EMBEDDER_SETS  # noqa: E402  (bench/embedders.py, beside this file)
from embedders import load_beir, metrics  # noqa: E402

from retrieval.bm25 import Bm25Params  # noqa: E402
from retrieval.embedder import E5Embedder, SentenceTransformerEmbedder, UseEmbedder  # noqa: E402
from retrieval.language import detect_language  # noqa: E402
from retrieval.retriever import MODES, Retriever  # noqa: E402
from retrieval.store import FaissStore, IndexIdentity  # noqa: E402
from retrieval.types import Chunk  # noqa: E402

SETS = {**EMBEDDER_SETS, "msmarco-mini": "retrieval/msmarco-mini"}
BUILDERS = {"e5": E5Embedder, "use": UseEmbedder, "minilm": SentenceTransformerEmbedder}


class CachedQueries:
    """Hands the Retriever query vectors embedded beforehand, so that modes are timed on search alone."""

    def __init__(self, model_id: str, dim: int, vectors: dict[str, np.ndarray]) -> None:
        self.model_id = model_id
        self._dim = dim
        self._vectors = vectors

    @property
    def dim(self) -> int:
        return self._dim

    def warm_up(self) -> None:
        pass

    def embed_documents(self, texts):  # pragma: no cover - never called: passages come from the cache
        raise NotImplementedError

    def embed_query(self, text: str) -> np.ndarray:
        return self._vectors[text]


def _cached(path: Path, compute):
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else 0.0


def run_set(set_name: str, args, emb) -> list[dict]:
    corpus, queries, qrels = load_beir(Path(args.data) / SETS[set_name], args.max_queries, args.seed)
    ids = [d["_id"] for d in corpus]
    texts = [((d.get("title") or "") + "\n" + d["text"]).strip() for d in corpus]
    key = hashlib.sha256(("\x00".join(texts)).encode()).hexdigest()[:12]
    safe_id = emb.model_id.replace(":", "_").replace("/", "_")
    cache = Path(args.cache)

    def embed_docs():
        t = time.perf_counter()
        v = emb.embed_documents(texts)
        print(f"[{set_name}] embedded {len(texts)} passages in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        return {"vectors": v}

    docs = _cached(cache / f"{set_name}-{safe_id}-docs-{key}.npz", embed_docs)["vectors"]
    qtexts = list(queries.values())
    qkey = hashlib.sha256(("\x00".join(qtexts)).encode()).hexdigest()[:12]

    def embed_queries():
        vecs, ms = [], []
        for q in qtexts:
            t = time.perf_counter()
            vecs.append(emb.embed_query(q))
            ms.append((time.perf_counter() - t) * 1000)
        return {"vectors": np.vstack(vecs), "ms": np.array(ms)}

    qcache = _cached(cache / f"{set_name}-{safe_id}-queries-{qkey}.npz", embed_queries)
    qvec = {q: qcache["vectors"][i] for i, q in enumerate(qtexts)}

    with tempfile.TemporaryDirectory(prefix="consulta-bench-") as tmp:
        params = Bm25Params(args.k1, args.b)
        store = FaissStore(Path(tmp) / "index", bm25=params)
        chunks = [Chunk(doc_id, doc_id, text, 0, len(text),
                        {"source": doc_id, "collection": "bench", "language": detect_language(text)})
                  for doc_id, text in zip(ids, texts, strict=True)]
        t = time.perf_counter()
        with store.writer(IndexIdentity(emb.model_id, docs.shape[1])) as w:
            w.add(chunks, docs)
        publish_s = time.perf_counter() - t
        langs = {q: detect_language(q) for q in qtexts}
        rows = []
        for mode in args.modes.split(","):
            reader = FaissStore(Path(tmp) / "index", bm25=params).load()  # what a fresh process reads
            retriever = Retriever(CachedQueries(emb.model_id, docs.shape[1], qvec), reader, mode=mode,
                                  candidates=args.candidates, rrf_k=args.rrf_k)
            retriever.retrieve(qtexts[0], 10, language=langs[qtexts[0]])  # loads BM25 data, warms caches
            nd, mr, rc, ms = [], [], [], []
            for qid, q in queries.items():
                t = time.perf_counter()
                hits = retriever.retrieve(q, 10, language=langs[q])
                ms.append((time.perf_counter() - t) * 1000)
                a, b, c = metrics([h.chunk.id for h in hits], qrels[qid])
                nd.append(a)
                mr.append(b)
                rc.append(c)
            r = {"set": set_name, "mode": mode, "embedder": args.embedder, "docs": len(ids),
                 "queries": len(queries), "ndcg@10": round(float(np.mean(nd)), 3),
                 "mrr@10": round(float(np.mean(mr)), 3), "recall@10": round(float(np.mean(rc)), 3),
                 "search_ms_p50": _pct(ms, 50), "search_ms_p95": _pct(ms, 95),
                 "embed_ms_p50": _pct(list(qcache["ms"]), 50), "embed_ms_p95": _pct(list(qcache["ms"]), 95),
                 "publish_s": round(publish_s, 2)}
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--embedder", default="e5", choices=sorted(BUILDERS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--max-queries", type=int, default=300)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--rrf-k", type=int, default=60)
    ap.add_argument("--k1", type=float, default=0.9)
    ap.add_argument("--b", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "consulta-bench"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for s in args.sets.split(","):
        if s not in SETS:
            ap.error(f"unknown set {s!r}: choose from {', '.join(SETS)}")
    for m in args.modes.split(","):
        if m not in MODES:
            ap.error(f"unknown mode {m!r}: choose from {', '.join(MODES)}")
    emb = BUILDERS[args.embedder]()
    results = [r for s in args.sets.split(",") for r in run_set(s, args, emb)]
    if args.json:
        print(json.dumps({"results": results}, indent=1))
        return
    print("| set | mode | nDCG@10 | MRR@10 | recall@10 | search ms p50 / p95 | query embed ms p50 / p95 |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['set']} | {r['mode']} | {r['ndcg@10']:.3f} | {r['mrr@10']:.3f} | {r['recall@10']:.3f} | "
              f"{r['search_ms_p50']} / {r['search_ms_p95']} | {r['embed_ms_p50']} / {r['embed_ms_p95']} |")


if __name__ == "__main__":
    main()
