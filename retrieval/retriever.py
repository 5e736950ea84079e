"""The retriever: query -> [expansion] -> dense (FAISS) and/or BM25 search, filters inside -> fusion
-> [re-rank] -> [diversity] -> hits.

Modes: "dense" (embedding cosine), "bm25" (lexical, stemmed per language) and "hybrid" (both, merged by
score fusion: each list's top `fusion_depth` scores are min-max normalised to 0..1 and a hit scores their sum
over the lists, 0 where it is missing; or, with fusion="rrf", by reciprocal rank fusion, sum(1 / (rrf_k + rank));
plus a bonus for holding the query's identifiers, such as form numbers, verbatim). Whatever
the mode, every hit carries `dense_score`, the cosine of query and chunk, so that the "documents don't
say" threshold keeps one scale. In hybrid mode an English question also gets a third ranking when
`english_embedder` is given and the index holds its vectors: that English-only model (the bundled
all-MiniLM-L6-v2) searches the English chunks, and its list joins the fusion (it lifted nDCG@10 on every English
set measured; in Spanish it would only add noise, so other languages never see it).

Optional stages, each off by default and chosen by settings: query expansion (`QueryExpander`: synonyms,
multi-query rewriting, HyDE, decomposition; plus BM25 pseudo-relevance feedback, `feedback`), whose
extra rankings join the fusion; a re-ranker over the fused candidates; then near-duplicate removal or
MMR over the re-ranked list.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal, get_args

import numpy as np

from retrieval.bm25 import DEFAULT_LANGUAGE
from retrieval.diversity import drop_near_duplicates, mmr
from retrieval.embedder import Embedder
from retrieval.errors import EmbedderMismatchError, IndexNotFoundError
from retrieval.expansion import QueryExpander
from retrieval.reranker import NoopReranker, Reranker
from retrieval.store import ENGLISH_FIELD, StoreReader
from retrieval.types import Hit, SearchFilter

logger = logging.getLogger(__name__)

RetrievalMode = Literal["hybrid", "dense", "bm25"]
MODES: tuple[str, ...] = get_args(RetrievalMode)
Diversity = Literal["none", "dedup", "mmr"]
Fusion = Literal["score", "rrf"]
FUSIONS: tuple[str, ...] = get_args(Fusion)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int = 60) -> list[tuple[Hit, float]]:
    """Merge ranked lists: each chunk scores sum(1 / (k + rank)), rank from 1; best first.

    The Hit kept for a chunk is its first appearance (so a dense hit keeps its cosine); ties keep the
    order of first appearance, dense before sparse when the dense list comes first.
    """
    fused: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            cid = hit.chunk.id
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank)
            first.setdefault(cid, hit)
    order = sorted(first, key=lambda cid: -fused[cid])  # stable: ties stay in first-appearance order
    return [(first[cid], fused[cid]) for cid in order]


def score_fusion(rankings: Sequence[Sequence[Hit]], depth: int = 100) -> list[tuple[Hit, float]]:
    """Merge ranked lists by their scores: each list's top `depth` scores are min-max normalised (its best 1, its
    last 0; a list whose scores are all equal gives each 1) and a chunk scores the sum over the lists, 0 where it
    is missing; best first.

    Unlike rank fusion this keeps how far ahead a hit is: a passage the embedding places first by a wide margin
    is not overtaken by one that both lists rank second (convex combination, Bruch et al. 2023). The Hit kept
    for a chunk is its first appearance; ties keep the order of first appearance.
    """
    fused: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        top = ranking[:depth]
        if not top:
            continue
        scores = np.array([h.score for h in top], dtype=np.float64)
        lo, hi = float(scores.min()), float(scores.max())
        normed = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
        for hit, value in zip(top, normed.tolist(), strict=True):
            cid = hit.chunk.id
            fused[cid] = fused.get(cid, 0.0) + value
            first.setdefault(cid, hit)
    order = sorted(first, key=lambda cid: -fused[cid])  # stable: ties stay in first-appearance order
    return [(first[cid], fused[cid]) for cid in order]


# An identifier: a token holding a digit and a letter ("W-9", "DS2031", "B12"), digits joined by - or /
# ("1234567-12", "2024/031"), or a long run of digits (an account or file number). Years and plain
# amounts ("2023", "3.5", "1,200") are not identifiers.
_IDENTIFIER = re.compile(
    r"(?<![\w])(?=[\w./-]*\d)(?:[A-Za-z0-9]+(?:[-/][A-Za-z0-9]+)+|(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]*\d[A-Za-z0-9]*"
    r"|\d{5,})(?![\w])")


def query_identifiers(query: str) -> list[str]:
    """The identifier-like tokens of a query (form, case, article or account numbers), lowercased, unique."""
    seen: dict[str, None] = {}
    for m in _IDENTIFIER.finditer(query):
        tok = m.group(0).lower()
        if any(c.isdigit() for c in tok):
            seen.setdefault(tok, None)
    return list(seen)


def identifier_boost(fused: Sequence[tuple[Hit, float]], identifiers: Sequence[str], bonus: float
                     ) -> list[tuple[Hit, float]]:
    """`fused` with `bonus` x (share of `identifiers` found verbatim in a chunk's text) added, best first.

    Fusion forgets that a chunk matched a form number exactly: a chunk first in BM25 for "form 1234567-12"
    but outside the dense list can end below chunks that both lists rank middling.
    """
    if not identifiers or bonus <= 0:
        return list(fused)
    patterns = [re.compile(r"(?<![\w-])" + re.escape(t) + r"(?![\w]|-\w)", re.IGNORECASE) for t in identifiers]
    rescored = []
    for hit, score in fused:
        found = sum(1 for p in patterns if p.search(hit.chunk.text))
        rescored.append((hit, score + bonus * found / len(patterns)))
    return sorted(rescored, key=lambda hs: -hs[1])  # stable: ties keep the fused order


class Retriever:
    """Dense, BM25 or hybrid retrieval over a store, picking up generations other processes publish.

    `detect_language` (text -> "en" | "es" | "ca" ...) picks the BM25 analyser for a query when the
    caller does not pass `language`; the composition root injects it, since retrieval imports nothing
    of ours.
    """

    def __init__(self, embedder: Embedder, store: StoreReader, *, reranker: Reranker | None = None,
                 candidates: int = 20, mode: RetrievalMode = "hybrid", rrf_k: int = 60,
                 detect_language: Callable[[str], str] | None = None, expander: QueryExpander | None = None,
                 feedback: int = 0, diversity: Diversity = "none", dedup_threshold: float = 0.95,
                 mmr_lambda: float = 0.7, identifier_weight: float = 1.0,
                 english_embedder: Embedder | None = None, fusion: Fusion = "score", fusion_depth: int = 100) -> None:
        if diversity not in ("none", "dedup", "mmr"):
            raise ValueError(f"unknown diversity {diversity!r}: choose none, dedup or mmr")
        if mode not in MODES:
            raise ValueError(f"unknown retrieval mode {mode!r}: choose one of {', '.join(MODES)}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
        if candidates < 1 or rrf_k < 1 or fusion_depth < 1:
            raise ValueError(f"candidates, rrf_k and fusion_depth must be at least 1 (got {candidates}, {rrf_k}, "
                             f"{fusion_depth})")
        self.embedder = embedder
        self.store = store
        self.reranker = reranker or NoopReranker()
        self.candidates = candidates
        self.mode = mode
        self.rrf_k = rrf_k
        self.fusion = fusion
        self.fusion_depth = fusion_depth
        self.detect_language = detect_language
        self.expander = expander
        self.feedback = feedback
        self.diversity = diversity
        self.dedup_threshold = dedup_threshold
        self.mmr_lambda = mmr_lambda
        self.identifier_weight = identifier_weight
        self.english_embedder = english_embedder
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the embedder, a cross-encoder re-ranker, and the index with its BM25 data when there is one, so the
        first query does not wait."""
        self.embedder.warm_up()
        if self.english_embedder is not None and self.mode == "hybrid":
            self.english_embedder.warm_up()
        warm = getattr(self.reranker, "warm_up", None)
        if callable(warm):
            warm()
        try:
            self._ensure_loaded()
        except IndexNotFoundError:
            return
        if self.mode != "dense":
            self.store.load_sparse()
            if self.detect_language is not None:
                self.detect_language("warm up")

    def _ensure_loaded(self) -> None:
        with self._lock:
            self.store.ensure_current()
            ident = self.store.identity
            if ident is not None and ident.embedder != self.embedder.model_id:
                raise EmbedderMismatchError(
                    f"the index was built with embedder {ident.embedder}, but the settings now use "
                    f"{self.embedder.model_id}; run `consulta reindex` or restore the old setting")

    def _language(self, query: str, language: str | None) -> str:
        if language:
            return language
        if self.detect_language is not None:
            return self.detect_language(query)
        return DEFAULT_LANGUAGE

    def _with_dense_scores(self, vector: np.ndarray, hits: Sequence[Hit], scores: Sequence[float]) -> list[Hit]:
        """`hits` rescored with `scores`, each with its cosine (looked up from the stored vectors if unknown)."""
        missing = [h.chunk for h in hits if h.dense_score is None]
        cosines = iter(self.store.similarities(vector, missing).tolist()) if missing else iter(())
        return [Hit(h.chunk, float(s), h.dense_score if h.dense_score is not None else float(next(cosines)))
                for h, s in zip(hits, scores, strict=True)]

    def retrieve(self, query: str, k: int = 5, filter: SearchFilter | None = None, *,
                 language: str | None = None, timings: dict[str, float] | None = None) -> list[Hit]:
        """The k best hits for `query`; `language` picks the BM25 analyser (detected when not given).

        `timings`, when given, receives the seconds spent per stage (expand, search, rerank, diversity).
        """
        t0 = time.perf_counter()
        self._ensure_loaded()
        depth = max(k, self.candidates)
        language = self._language(query, language) if self.mode != "dense" else language
        expansion = self.expander.expand(query) if self.expander is not None and self.expander.active else None
        # score fusion normalises each list over its top fusion_depth, so each list is searched that deep
        fusing = self.mode == "hybrid" or expansion is not None
        search_depth = max(depth, self.fusion_depth) if fusing and self.fusion == "score" else depth
        t1 = time.perf_counter()
        vector = self.embedder.embed_query(query)
        rankings = self._rankings(query, vector, search_depth, filter, language,
                                  lexical=expansion.lexical if expansion else "", original=True)
        if language == "en" and self.mode == "hybrid" and self.english_embedder is not None \
                and self.store.has_field(ENGLISH_FIELD, self.english_embedder.model_id):
            english = self.store.search(self.english_embedder.embed_query(query), search_depth, filter,
                                        field=ENGLISH_FIELD)
            rankings.append([replace(h, dense_score=None) for h in english])
        if expansion is not None:
            for q in (*expansion.queries, *expansion.sub_queries):
                rankings += self._rankings(q, self.embedder.embed_query(q), search_depth, filter, language,
                                           lexical="", original=False)
            if self.mode != "bm25" and expansion.passages:
                for pv in self.embedder.embed_documents(list(expansion.passages)):
                    rankings.append([replace(h, dense_score=None)
                                     for h in self.store.search(pv, search_depth, filter)])
        if len(rankings) == 1:
            ranked = rankings[0][:depth]
            hits = self._with_dense_scores(vector, ranked, [h.score for h in ranked])
        else:
            if self.fusion == "score":
                fused = score_fusion(rankings, search_depth)
                first_place = 1.0  # a list's best hit scores 1
            else:
                fused = reciprocal_rank_fusion(rankings, self.rrf_k)
                first_place = 1.0 / (self.rrf_k + 1)
            if self.mode != "dense":
                bonus = self.identifier_weight * first_place  # worth a first place in one more list
                fused = identifier_boost(fused, query_identifiers(query), bonus)
            fused = fused[:depth]
            hits = self._with_dense_scores(vector, [h for h, _ in fused], [s for _, s in fused])
        t2 = time.perf_counter()
        diverse = self.diversity != "none"
        hits = self.reranker.rerank(query, hits, depth if diverse else k)
        t3 = time.perf_counter()
        if diverse and hits:
            vectors = self.store.vectors_of([h.chunk for h in hits])
            if self.diversity == "dedup":
                hits = drop_near_duplicates(hits, vectors, self.dedup_threshold)[:k]
            else:
                hits = mmr(vector, hits, vectors, k, self.mmr_lambda)
        if timings is not None:
            timings.update(expand=t1 - t0, search=t2 - t1, rerank=t3 - t2, diversity=time.perf_counter() - t3)
        return hits[:k]

    def _rankings(self, query: str, vector: np.ndarray, depth: int, filter: SearchFilter | None,
                  language: str | None, *, lexical: str, original: bool) -> list[list[Hit]]:
        """The dense and/or BM25 ranking of one query (dense first, so fused hits keep the dense cosine).

        Only the original question's cosines are kept: a rewrite's cosine is not the question's.
        """
        out: list[list[Hit]] = []
        if self.mode != "bm25":
            dense = self.store.search(vector, depth, filter)
            out.append([replace(h, dense_score=h.score if original else None) for h in dense])
        if self.mode != "dense":
            text = f"{query} {lexical}" if lexical else query
            out.append(self.store.search_sparse(text, depth, filter, language=language, feedback=self.feedback))
        return out
