"""Retrieval quality and latency of every stage, through Consulta's own retrieval path, as JSON.

    flock /tmp/consulta-cpu.lock python bench/retrieval.py [--sets xquad-en,...] [--configs bm25,dense,...]
        [--max-queries 300] [--llm-queries 20] [--model qwen2.5-coder-0.5b] [--rerank-top 8] [--json]
    flock /tmp/consulta-cpu.lock python bench/retrieval.py --scale 100000    # synthetic scale test

Configs (each a Retriever built like app/container.py builds it): bm25, dense-e5, dense-use, dense-minilm, or
"hybrid" followed by any of these parts joined with "+" (one re-ranker at most), e.g. hybrid+hyde+en+rerank-blend:
  bm25                BM25 alone (stemmed per language)
  dense-e5/-use/-minilm  dense alone, exact inner product, one per bundled embedder
  hybrid              e5 + BM25, score fusion: each list's top 100 scores min-max normalised and summed (the
                      default pipeline, less the English ranking)
  +rrf                reciprocal rank fusion instead (k=60, the top --candidates of each list)
  +en                 the English ranking (retrieval.english_embedder=minilm, the default): English questions
                      also search the English passages with all-MiniLM-L6-v2, a third list in the fusion
  +prf                BM25 with pseudo-relevance feedback (lexical expansion, no LLM)
  +expansion          LLM multi-query rewriting (2) + HyDE                           [LLM]
  +hyde, +multiquery  HyDE alone / the 2 rewrites alone                              [LLM]
  +decompose          LLM decomposition into sub-questions                           [LLM]
  +rerank             LLM yes/no re-ranking of the top --rerank-top                  [LLM]
  +rerank-blend       the same judgements, fused with the first-stage rank (blend 1.0)  [LLM]
  +qlm                query-likelihood re-ranking of the top --rerank-top: mean log P(question | passage)
                      under the LLM (UPR)                                            [LLM]
  +qlm-blend          the same scores mixed with the first-stage order at --qlm-blend  [LLM]
  +ce                 a cross-encoder trained on the set's own passages (InPars-style: the --ce-model LLM
                      writes --ce-questions questions about sampled passages, hard negatives from hybrid
                      search, MiniLM fine-tuned; retrieval/reranker_training.py), re-ranking the top
                      --ce-top; trained once per set into --ce-dir/SET and reused
  +ce-blend           the same model's scores mixed with the first-stage order, at the weight its training
                      chose on held-out questions (retrieval.reranker.interpolate)
  full / full-blend   hybrid+prf+expansion+qlm / hybrid+prf+expansion+qlm-blend (more parts may follow)
LLM configs run on the first --llm-queries queries of each set only (the bundled GGUF on 2 CPU cores is
slow); each LLM row is printed beside `hybrid` measured on the same queries ("subset": true).

Per row: nDCG@10, MRR@10, recall@10, recall@k (--recall-k, default 20), and the latency per query
(p50/p95 ms). Latency covers everything retrieve() does, except embedding the original question, which is
the same in every config and printed apart (embed_ms); an LLM config's extra queries are embedded live and
counted. With --compress N, also the tokens an extractive compressor saves on the top 4 passages of
`hybrid` and how often the gold answer string survives it (QA sets only).

Passage and query vectors are cached under --cache (default /tmp/consulta-bench), shared with
bench/hybrid.py. The data is read from ../shared/data; the project never copies it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from embedders import load_beir, metrics  # noqa: E402
from hybrid import BUILDERS, SETS, _cached, _pct  # noqa: E402

from retrieval.bm25 import Bm25Params  # noqa: E402
from retrieval.compressor import ExtractiveCompressor  # noqa: E402
from retrieval.expansion import QueryExpander  # noqa: E402
from retrieval.language import detect_language  # noqa: E402
from retrieval.reranker import (  # noqa: E402
    MANIFEST,
    QUERY_LIKELIHOOD_BLEND,
    CrossEncoderReranker,
    LlmReranker,
    QueryLikelihoodReranker,
    read_manifest,
)
from retrieval.reranker_training import SyntheticQuery, TrainingConfig, train_reranker  # noqa: E402
from retrieval.retriever import Retriever  # noqa: E402
from retrieval.store import FaissStore, IndexConfig, IndexIdentity  # noqa: E402
from retrieval.types import Chunk  # noqa: E402

# A hybrid config is "hybrid" followed by parts joined with "+", in any combination (one re-ranker at most);
# "full" and "full-blend" stand for the LLM pipeline below.
PARTS = {"prf", "expansion", "hyde", "multiquery", "decompose", "rerank", "rerank-blend", "qlm", "qlm-blend", "ce",
         "ce-blend", "en", "rrf"}
LLM_PARTS = {"expansion", "hyde", "multiquery", "decompose", "rerank", "rerank-blend", "qlm", "qlm-blend"}
RERANK_PARTS = {"rerank", "rerank-blend", "qlm", "qlm-blend", "ce", "ce-blend"}
ALIASES = {"full": "hybrid+prf+expansion+qlm", "full-blend": "hybrid+prf+expansion+qlm-blend"}
SINGLE = ["bm25", "dense-e5", "dense-use", "dense-minilm"]
CONFIGS = [*SINGLE, "hybrid", "hybrid+prf", "hybrid+expansion", "hybrid+hyde", "hybrid+multiquery",
           "hybrid+decompose", "hybrid+rerank", "hybrid+rerank-blend", "full", "full-blend", "hybrid+qlm",
           "hybrid+qlm-blend", "hybrid+ce", "hybrid+ce-blend", "hybrid+prf+ce"]  # the default --configs


def config_parts(config: str) -> set[str]:
    """The parts of a hybrid config ({"prf", "en", ...}); empty for BM25 or dense alone."""
    if config in SINGLE:
        return set()
    head, *rest = config.split("+")
    if head in ALIASES:
        return config_parts("+".join([ALIASES[head], *rest]))
    if head != "hybrid" or not set(rest) <= PARTS or len(RERANK_PARTS & set(rest)) > 1:
        raise ValueError(f"unknown config {config!r}: {', '.join(SINGLE)}, or hybrid[+PART...] with parts from "
                         f"{', '.join(sorted(PARTS))} (one re-ranker at most), or full[-blend][+PART...]")
    return set(rest)


def needs_llm(config: str) -> bool:
    return bool(config_parts(config) & LLM_PARTS)
QA_FILES = {"xquad-en": "qa/xquad/en", "xquad-es": "qa/xquad/es", "squad2-en-half": "qa/squad2-en-half"}


class CachedEmbedder:
    """The real embedder, answering the benchmark's own questions from the cache (timed apart)."""

    def __init__(self, emb, dim: int, vectors: dict[str, np.ndarray]) -> None:
        self._emb = emb
        self.model_id = emb.model_id
        self._dim = dim
        self._vectors = vectors

    @property
    def dim(self) -> int:
        return self._dim

    def warm_up(self) -> None:
        pass

    def embed_documents(self, texts):
        return self._emb.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        v = self._vectors.get(text)
        return v if v is not None else self._emb.embed_query(text)


def embed_set(set_name: str, emb, texts: list[str], qtexts: list[str], cache: Path):
    import hashlib

    key = hashlib.sha256(("\x00".join(texts)).encode()).hexdigest()[:12]
    qkey = hashlib.sha256(("\x00".join(qtexts)).encode()).hexdigest()[:12]
    safe = emb.model_id.replace(":", "_").replace("/", "_")

    def docs():
        t = time.perf_counter()
        v = emb.embed_documents(texts)
        print(f"[{set_name}] {emb.model_id}: embedded {len(texts)} passages in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)
        return {"vectors": v}

    def queries():
        vecs, ms = [], []
        for q in qtexts:
            t = time.perf_counter()
            vecs.append(emb.embed_query(q))
            ms.append((time.perf_counter() - t) * 1000)
        return {"vectors": np.vstack(vecs), "ms": np.array(ms)}

    d = _cached(cache / f"{set_name}-{safe}-docs-{key}.npz", docs)["vectors"]
    q = _cached(cache / f"{set_name}-{safe}-queries-{qkey}.npz", queries)
    return d, {t: q["vectors"][i] for i, t in enumerate(qtexts)}, list(q["ms"])


def build_store(root: Path, emb_id: str, chunks: list[Chunk], vectors: np.ndarray,
                english: tuple[str, np.ndarray] | None = None) -> FaissStore:
    """A published index of these chunks; `english` (model id, one vector per chunk) adds the English ranking's
    vectors for the English chunks, as ingestion stores them."""
    store = FaissStore(root, bm25=Bm25Params())
    with store.writer(IndexIdentity(emb_id, vectors.shape[1])) as w:
        if english is not None:
            en_id, en_vectors = english
            w.use_english(en_id, en_vectors.shape[1])
            is_en = np.array([c.meta.get("language") == "en" for c in chunks])
            w.add(chunks, vectors, np.where(is_en[:, None], en_vectors, 0).astype(np.float32))
        else:
            w.add(chunks, vectors)
    return FaissStore(root, bm25=Bm25Params()).load()  # what a fresh process reads


class Llm:
    """The bundled GGUF through the real BatchingEngine, as the container wires it.

    Answers are memoised by prompt, so configs that share a step (full reuses the expansion and the
    re-ranker's judgements) pay for it once; each config's latency is then measured without the shared
    part, so LLM latencies are reported from the first config that ran them (see stage_ms_p50).
    """

    def __init__(self, model: str, threads: int | None) -> None:
        from app.models import resolve_model
        from app.settings import Settings
        from serving.engine import BatchingEngine

        path = resolve_model(model, Settings().models_dir)
        self.engine = BatchingEngine(str(path), n_ctx=8192, n_threads=threads, max_sequences=8, n_batch=512)
        self.engine.warm_up()
        self._texts: dict[tuple[str, int], str] = {}
        self._scores: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}
        self._spans: dict[tuple[str, str], list[float]] = {}

    def generate(self, prompt: str, max_tokens: int) -> str:
        from serving.generator import SamplingParams

        key = (prompt, max_tokens)
        if key not in self._texts:
            self._texts[key] = self.engine.generate([{"role": "user", "content": prompt}],
                                                    SamplingParams(max_tokens=max_tokens, temperature=0.0)).text
        return self._texts[key]

    def score(self, prompts, candidates) -> list[dict[str, float]]:
        cand = tuple(candidates)
        todo = [p for p in dict.fromkeys(prompts) if (p, cand) not in self._scores]
        if todo:
            for p, r in zip(todo, self.engine.next_token_logprobs(todo, cand), strict=True):
                self._scores[(p, cand)] = r
        return [self._scores[(p, cand)] for p in prompts]


    def continuation(self, prompts, continuations) -> list[list[float]]:
        pairs = list(zip(prompts, continuations, strict=True))
        todo = [pair for pair in dict.fromkeys(pairs) if pair not in self._spans]
        if todo:
            got = self.engine.continuation_logprobs([p for p, _ in todo], [c for _, c in todo])
            self._spans.update(zip(todo, got, strict=True))
        return [self._spans[pair] for pair in pairs]


def make_retriever(config: str, embedder, store, llm: Llm | None, args) -> Retriever:
    """The config's Retriever (its English ranking, part "en", is set by the caller, which holds the vectors)."""
    kw: dict = {"candidates": args.candidates, "detect_language": detect_language}
    if config == "bm25":
        return Retriever(embedder, store, mode="bm25", **kw)
    if config.startswith("dense-"):
        return Retriever(embedder, store, mode="dense", **kw)
    parts = config_parts(config)
    if "rrf" in parts:
        kw["fusion"] = "rrf"
    if "prf" in parts:
        kw["feedback"] = args.feedback
    multi_query = 2 if parts & {"expansion", "multiquery"} else 0
    hyde = bool(parts & {"expansion", "hyde"})
    if multi_query or hyde or "decompose" in parts:
        kw["expander"] = QueryExpander(generate=llm.generate, multi_query=multi_query, hyde=hyde,
                                       decompose="decompose" in parts)
    if parts & {"ce", "ce-blend"}:
        path = Path(args.ce_dir) / args.current_set
        # ce: the model's order alone; ce-blend: the first-stage weight training chose on held-out questions
        kw["reranker"] = CrossEncoderReranker(str(path), top=args.ce_top, blend=None if "ce-blend" in parts else 0.0)
    if parts & {"rerank", "rerank-blend"}:
        kw["reranker"] = LlmReranker(llm.score, format_chat=llm.engine.format_chat, top=args.rerank_top,
                                     blend=1.0 if "rerank-blend" in parts else 0.0)
    if parts & {"qlm", "qlm-blend"}:
        kw["reranker"] = QueryLikelihoodReranker(llm.continuation, format_chat=llm.engine.format_chat,
                                                 top=args.rerank_top,
                                                 blend=args.qlm_blend if "qlm-blend" in parts else 0.0)
    return Retriever(embedder, store, mode="hybrid", **kw)


def ensure_cross_encoder(set_name: str, chunks: list[Chunk], embedder, store, args, llm_box: dict) -> dict:
    """Train the set's cross-encoder unless --ce-dir/SET already holds one; returns its training report.

    The LLM's questions are kept in --ce-dir/SET.questions.json, so that --ce-retrain (new training settings)
    does not write them again.
    """
    out = Path(args.ce_dir) / set_name
    if (out / MANIFEST).exists() and not args.ce_retrain:
        return {"set": set_name, "config": "ce-training (reused)",
                **{k: v for k, v in (read_manifest(out) or {}).items() if k != "questions"}}
    saved = Path(args.ce_dir) / f"{set_name}.questions.json"
    queries = None
    if saved.exists():
        queries = [SyntheticQuery(**q) for q in json.loads(saved.read_text(encoding="utf-8"))]
    first = Retriever(embedder, store, mode="hybrid", candidates=args.candidates, detect_language=detect_language)

    def generate(prompt: str, max_tokens: int) -> str:
        if llm_box.get("llm") is None:
            llm_box["llm"] = Llm(args.ce_model, args.threads)
        return llm_box["llm"].generate(prompt, max_tokens)

    t = time.perf_counter()
    report = train_reranker(chunks, generate, lambda q: first.retrieve(q, 20), out,
                            questions=args.ce_questions, concurrency=8, queries=queries,
                            config=TrainingConfig(loss=args.ce_loss, epochs=args.ce_epochs, learning_rate=args.ce_lr,
                                                  batch_size=8 if args.ce_loss == "listwise" else 16, seed=args.seed),
                            progress=lambda stage, d, n: print(f"[{set_name}] {stage} {d}/{n}", file=sys.stderr)
                            if d % 25 == 0 or d == n else None)
    if queries is None:
        saved.write_text(json.dumps((read_manifest(out) or {}).get("questions", []), ensure_ascii=False),
                         encoding="utf-8")
    row = {"set": set_name, "config": "ce-training", "llm": args.ce_model, "questions_reused": queries is not None,
           **report.to_dict(), "total_s": round(time.perf_counter() - t, 1)}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def evaluate(retriever: Retriever, queries: dict[str, str], qrels, langs, args) -> dict:
    nd, mr, rc, rk, ms = [], [], [], [], []
    stages: dict[str, list[float]] = {}
    k = max(10, args.recall_k)
    for qid, q in queries.items():
        timings: dict[str, float] = {}
        t = time.perf_counter()
        hits = retriever.retrieve(q, k, language=langs[q], timings=timings)
        ms.append((time.perf_counter() - t) * 1000)
        for name, s in timings.items():
            stages.setdefault(name, []).append(s * 1000)
        ids = [h.chunk.id for h in hits]
        a, b, c = metrics(ids, qrels[qid])
        nd.append(a)
        mr.append(b)
        rc.append(c)
        rk.append(sum(1 for d in ids[: args.recall_k] if qrels[qid].get(d, 0) > 0) / max(1, len(qrels[qid])))
    return {"queries": len(queries), "ndcg@10": round(float(np.mean(nd)), 3), "mrr@10": round(float(np.mean(mr)), 3),
            "recall@10": round(float(np.mean(rc)), 3), f"recall@{args.recall_k}": round(float(np.mean(rk)), 3),
            "ms_p50": _pct(ms, 50), "ms_p95": _pct(ms, 95),
            "stage_ms_p50": {name: _pct(v, 50) for name, v in stages.items()}}


def compression(set_name: str, retriever: Retriever, emb, queries: dict[str, str], langs, args) -> dict | None:
    qa_dir = Path(args.data) / QA_FILES[set_name] if set_name in QA_FILES else None
    if qa_dir is None or not (qa_dir / "qa.jsonl").exists():
        return None
    answers = {r["id"]: r.get("answers") or [] for r in map(json.loads, (qa_dir / "qa.jsonl").open(encoding="utf-8"))}
    comp = (ExtractiveCompressor(emb.embed_query, emb.embed_documents, budget_tokens=args.compress)
            if args.compress_dense else ExtractiveCompressor(budget_tokens=args.compress))
    before = after = 0
    kept = had = 0
    ms = []
    for qid, q in list(queries.items())[: args.compress_queries]:
        hits = retriever.retrieve(q, 4, language=langs[q])
        gold = [a for a in answers.get(qid, []) if a]
        t = time.perf_counter()
        c = comp.compress(q, hits, language=langs[q])
        ms.append((time.perf_counter() - t) * 1000)
        before += c.tokens_before
        after += c.tokens_after
        full = " ".join(h.chunk.text for h in hits)
        short = " ".join(h.chunk.text for h in c.hits)
        if gold and any(a in full for a in gold):
            had += 1
            kept += any(a in short for a in gold)
    how = "dense+lexical" if args.compress_dense else "lexical"
    return {"set": set_name, "config": f"hybrid top-4 compressed ({how}) to {args.compress} tokens", "queries": len(ms),
            "tokens_before": before, "tokens_after": after, "tokens_saved": round(1 - after / max(1, before), 3),
            "answer_kept": round(kept / max(1, had), 3), "answers_in_context": had,
            "compress_ms_p50": _pct(ms, 50)}


def run_set(set_name: str, args, embedders: dict, llm: Llm | None) -> list[dict]:
    corpus, queries, qrels = load_beir(Path(args.data) / SETS[set_name], args.max_queries, args.seed)
    ids = [d["_id"] for d in corpus]
    texts = [((d.get("title") or "") + "\n" + d["text"]).strip() for d in corpus]
    qtexts = list(queries.values())
    langs = {q: detect_language(q) for q in qtexts}
    chunks = [Chunk(i, i, t, 0, len(t), {"source": i, "collection": "bench", "language": detect_language(t)})
              for i, t in zip(ids, texts, strict=True)]
    configs = args.configs.split(",")
    needed = {"e5"} | {c.split("-", 1)[1] for c in configs if c.startswith("dense-")}
    rows = []
    subset = dict(list(queries.items())[: args.llm_queries])
    with tempfile.TemporaryDirectory(prefix="consulta-bench-") as tmp:
        stores, cached, passages = {}, {}, {}
        for name in sorted(needed):
            emb = embedders[name]
            docs, qvec, qms = embed_set(set_name, emb, texts, qtexts, Path(args.cache))
            passages[name] = docs
            stores[name] = build_store(Path(tmp) / name, emb.model_id, chunks, docs)
            cached[name] = (CachedEmbedder(emb, docs.shape[1], qvec), qms)
        english = None
        if any("en" in config_parts(c) for c in configs):
            en = embedders["minilm"]
            en_docs, en_qvec, _ = embed_set(set_name, en, texts, qtexts, Path(args.cache))
            english = CachedEmbedder(en, en_docs.shape[1], en_qvec)
            stores["e5+en"] = build_store(Path(tmp) / "e5+en", embedders["e5"].model_id, chunks, passages["e5"],
                                          english=(en.model_id, en_docs))
        args.current_set = set_name
        if any(config_parts(c) & {"ce", "ce-blend"} for c in configs):
            rows.append(ensure_cross_encoder(set_name, chunks, cached["e5"][0], stores["e5"], args, args.llm_box))
        plan = [(c, needs_llm(c)) for c in configs if llm is not None or not needs_llm(c)]
        if any(is_subset for _, is_subset in plan):
            plan.append(("hybrid", True))  # the baseline on the same queries as the LLM configs
        for config, is_subset in plan:
            name = config.split("-", 1)[1] if config.startswith("dense-") else "e5"
            emb, qms = cached[name]
            if "en" in config_parts(config):  # English questions also get the English model's ranking
                retriever = make_retriever(config, emb, stores["e5+en"], llm, args)
                retriever.english_embedder = english
            else:
                retriever = make_retriever(config, emb, stores[name], llm, args)
            qs = subset if is_subset else queries
            retriever.retrieve(qtexts[0], 10, language=langs[qtexts[0]])  # warm caches (BM25 data, ...)
            r = {"set": set_name, "config": config, "docs": len(ids), "subset": is_subset,
                 **evaluate(retriever, qs, qrels, langs, args),
                 "embed_ms_p50": _pct(qms, 50), "embed_ms_p95": _pct(qms, 95)}
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
        if args.compress and "hybrid" in configs:
            c = compression(set_name, make_retriever("hybrid", cached["e5"][0], stores["e5"], llm, args),
                            embedders["e5"], queries, langs, args)
            if c:
                rows.append(c)
                print(json.dumps(c), file=sys.stderr, flush=True)
    return rows


# ---- synthetic scale test --------------------------------------------------------------------
def scale_test(args) -> list[dict]:
    """Latency and recall at N chunks: vectors are real e5 passage vectors (msmarco-mini) plus noise, texts
    are real passages with random words of the corpus added, so both dense and BM25 see realistic data."""
    rng = np.random.default_rng(args.seed)
    corpus, queries, _ = load_beir(Path(args.data) / SETS["msmarco-mini"], 200, args.seed)
    # the first --scale-base passages are the real seeds the synthetic chunks vary (embedding all 5,000
    # MS MARCO-mini passages takes 15-20 minutes on 2 cores; the vectors are cached for later runs)
    texts = [((d.get("title") or "") + "\n" + d["text"]).strip() for d in corpus][:args.scale_base]
    qtexts = list(queries.values())
    emb = BUILDERS["e5"]()
    docs, qvec, _ = embed_set("msmarco-mini", emb, texts, qtexts, Path(args.cache))
    n, d = args.scale, docs.shape[1]
    base = rng.integers(0, len(texts), n)
    vectors = docs[base] + rng.standard_normal((n, d)).astype(np.float32) * (0.35 / np.sqrt(d))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    en_emb = BUILDERS["minilm"]()  # the English ranking's vectors, made the same way
    en_docs, en_qvec, _ = embed_set("msmarco-mini", en_emb, texts, qtexts, Path(args.cache))
    english = en_docs[base] + rng.standard_normal((n, en_docs.shape[1])).astype(np.float32) * (
        0.35 / np.sqrt(en_docs.shape[1]))
    english /= np.linalg.norm(english, axis=1, keepdims=True)
    words = " ".join(texts).split()
    chunks = [Chunk(f"s{i}", f"doc{i // 8}", texts[b] + " " + " ".join(rng.choice(words, 8)), 0, 1,
                    {"collection": "c%d" % (i % 10), "language": "en", "source": f"/s/{i // 8}"})
              for i, b in enumerate(base)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="consulta-scale-") as tmp:
        store = FaissStore(Path(tmp) / "index")
        t = time.perf_counter()
        with store.writer(IndexIdentity(emb.model_id, d)) as w:
            w.use_english(en_emb.model_id, english.shape[1])
            w.add(chunks, vectors, english)
        publish_s = time.perf_counter() - t
        q = np.vstack([qvec[x] for x in qtexts])
        exact = [set(h.chunk.id for h in store.search(v, 10)) for v in q]
        for kind in ("flat", "hnsw", "ivf"):
            cfg = IndexConfig(kind=kind, ef_search=args.ef_search, ivf_nprobe=args.nprobe)
            reader = FaissStore(Path(tmp) / "index", index=cfg).load()
            t = time.perf_counter()
            reader.search(q[0], 10)  # builds the approximate index on first use
            build_s = time.perf_counter() - t
            ms, recall = [], []
            for v, truth in zip(q, exact, strict=True):
                t = time.perf_counter()
                hits = reader.search(v, 10)
                ms.append((time.perf_counter() - t) * 1000)
                recall.append(len(truth & {h.chunk.id for h in hits}) / 10)
            r = {"scale": n, "index": kind, "recall@10_vs_exact": round(float(np.mean(recall)), 4),
                 "dense_ms_p50": _pct(ms, 50), "dense_ms_p95": _pct(ms, 95), "index_build_s": round(build_s, 1)}
            en_cached = CachedEmbedder(en_emb, english.shape[1], en_qvec)
            for mode, flt in (("hybrid", None), ("hybrid+filter", "c3"), ("hybrid+en", None),
                              ("hybrid+en+filter", "c3"), ("hybrid+rrf", None), ("hybrid+en+rrf", None)):
                from retrieval.types import SearchFilter

                retriever = Retriever(CachedEmbedder(emb, d, qvec), reader, mode="hybrid",
                                      english_embedder=en_cached if "+en" in mode else None,
                                      fusion="rrf" if mode.endswith("+rrf") else "score")
                f = SearchFilter(collections=(flt,)) if flt else None
                retriever.retrieve(qtexts[0], 10, f, language="en")
                ms = []
                for x in qtexts:
                    t = time.perf_counter()
                    retriever.retrieve(x, 10, f, language="en")
                    ms.append((time.perf_counter() - t) * 1000)
                r[f"{mode}_ms_p50"], r[f"{mode}_ms_p95"] = _pct(ms, 50), _pct(ms, 95)
            r["publish_s"] = round(publish_s, 1)
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
        # an incremental ingest at this size: 100 new chunks, BM25 analyses only them
        t = time.perf_counter()
        with store.writer(IndexIdentity(emb.model_id, d)) as w:
            w.add([Chunk(f"new{i}", "newdoc", texts[i], 0, 1, {"language": "en"}) for i in range(100)], docs[:100])
            analysed = w.bm25.texts_analysed
        rows.append({"scale": n, "ingest_100_chunks_s": round(time.perf_counter() - t, 1),
                     "bm25_texts_analysed": analysed})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--max-queries", type=int, default=300)
    ap.add_argument("--llm-queries", type=int, default=20, help="queries per set for LLM configs")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="bundled GGUF for LLM configs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rerank-top", type=int, default=8)
    ap.add_argument("--qlm-blend", type=float, default=QUERY_LIKELIHOOD_BLEND,
                    help="first-stage weight mixed into query-likelihood scores for hybrid+qlm-blend")
    ap.add_argument("--feedback", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--recall-k", type=int, default=20)
    ap.add_argument("--compress", type=int, default=0, help="token budget for the compression report (0: off)")
    ap.add_argument("--compress-dense", action="store_true", help="score sentences by embedding too (slow)")
    ap.add_argument("--compress-queries", type=int, default=100)
    ap.add_argument("--ce-dir", default=str(Path(tempfile.gettempdir()) / "consulta-bench" / "rerankers"))
    ap.add_argument("--ce-questions", type=int, default=250, help="synthetic questions per set for hybrid+ce")
    ap.add_argument("--ce-model", default="qwen2.5-coder-0.5b", help="bundled GGUF that writes them")
    ap.add_argument("--ce-epochs", type=int, default=TrainingConfig.epochs)
    ap.add_argument("--ce-loss", choices=("listwise", "pointwise"), default=TrainingConfig.loss)
    ap.add_argument("--ce-lr", type=float, default=TrainingConfig.learning_rate)
    ap.add_argument("--ce-top", type=int, default=20, help="first-stage hits the cross-encoder scores")
    ap.add_argument("--ce-retrain", action="store_true", help="train again even if --ce-dir/SET exists")
    ap.add_argument("--scale", type=int, default=0, help="run the synthetic scale test at this many chunks")
    ap.add_argument("--scale-base", type=int, default=1000, help="real passages the synthetic chunks derive from")
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "consulta-bench"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.scale:
        rows = scale_test(args)
        print(json.dumps({"scale": rows}, indent=1))
        return
    for s in args.sets.split(","):
        if s not in SETS:
            ap.error(f"unknown set {s!r}: choose from {', '.join(SETS)}")
    for c in args.configs.split(","):
        try:
            config_parts(c)
        except ValueError as e:
            ap.error(str(e))
    embedders = {name: BUILDERS[name]() for name in ("e5", "use", "minilm")}
    llm = Llm(args.model, args.threads) if any(needs_llm(c) for c in args.configs.split(",")) else None
    args.llm_box = {"llm": llm if args.ce_model == args.model else None}
    try:
        results = []
        for s in args.sets.split(","):
            results += run_set(s, args, embedders, llm)
    finally:
        for engine_owner in {id(x): x for x in (llm, args.llm_box.get("llm")) if x is not None}.values():
            engine_owner.engine.close()
    out = {"results": results, "llm": args.model if llm else None, "max_queries": args.max_queries,
           "llm_queries": args.llm_queries, "rerank_top": args.rerank_top}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
