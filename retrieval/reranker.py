"""The Reranker seam: reorders first-stage hits by a finer relevance judgement."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from retrieval.types import Hit

MANIFEST = "consulta-reranker.json"  # beside a trained CrossEncoder: what it was trained on, its first-stage blend


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest `consulta reranker train` wrote into a model folder; None when there is none."""
    try:
        return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Reranker(Protocol):
    """Scores (query, passage) pairs and returns the hits best first, at most `top_k`."""

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int) -> list[Hit]: ...


class NoopReranker:
    """Keeps the first-stage order: the default until a re-ranker earns its place by measurement."""

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int) -> list[Hit]:
        return list(hits[:top_k])


def _z(values: Sequence[float]) -> list[float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0
    return [(v - mean) / sd for v in values]


def mix(scores: Sequence[float], blend: float) -> list[float]:
    """z(re-ranker score) + blend x z(first-stage prior) for hits in first-stage order; the scores as they are
    when blend is 0.

    The prior is reciprocal rank, 1 / (60 + rank), the same curve that fused the first stage; blend 0 is the
    re-ranker's order alone, a large blend the first stage's.
    """
    if len(scores) < 2 or blend <= 0:
        return [float(s) for s in scores]
    prior, model = _z([1 / (60 + i + 1) for i in range(len(scores))]), _z(scores)
    return [m + blend * p for m, p in zip(model, prior, strict=True)]


def interpolate(scores: Sequence[float], blend: float) -> list[int]:
    """Indices of hits in first-stage order, best first, by `mix` (ties keep the first-stage order)."""
    mixed = mix(scores, blend)
    return sorted(range(len(mixed)), key=lambda i: (-mixed[i], i))


def rerank_by_scores(scores: Callable[[str, Sequence[str]], list[float]], query: str, hits: Sequence[Hit], top: int,
                     blend: float, top_k: int) -> list[Hit]:
    """The `top` hits in the order of `scores(query, passages)` mixed with their first-stage order (`mix`), then
    the unscored tail in its own order below them; at most `top_k`."""
    if not hits:
        return []
    head, tail = list(hits[:top]), list(hits[top:])
    mixed = mix(scores(query, [h.chunk.text for h in head]), blend)
    ranked = [Hit(head[i].chunk, mixed[i], head[i].dense_score) for i in interpolate(mixed, 0.0)]
    floor = min(mixed) - 1.0  # the unscored tail stays below every scored hit, in its order
    ranked += [Hit(h.chunk, floor - n, h.dense_score) for n, h in enumerate(tail)]
    return ranked[:top_k]


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder loaded from a local folder: BAAI/bge-reranker-base copied in by an
    operator, or one that `consulta reranker train` fine-tuned on the corpus itself.

    Only the `top` first-stage hits are scored (one forward pass per pair: about 50 pairs/s on 2 CPU cores);
    the rest keep their first-stage order after them. `blend` weighs the first-stage order in with the model's
    scores (`interpolate`); None takes the value `consulta reranker train` chose on its held-out questions
    (recorded in the folder), or 0 (the model's order alone) for a folder it did not write.
    """

    def __init__(self, path: str, *, batch_size: int = 16, top: int = 20, blend: float | None = None,
                 max_length: int | None = 256) -> None:
        if top < 1:
            raise ValueError(f"the cross-encoder re-ranker needs top >= 1 (got {top})")
        self.path = path
        self.batch_size = batch_size
        self.top = top
        self.blend = blend if blend is not None else _trained_blend(path)
        self.max_length = max_length
        self._model: Any = None  # loaded by warm_up

    def warm_up(self) -> None:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(self.path, device="cpu", local_files_only=True, max_length=self.max_length)

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        """The model's relevance score for each passage (higher: more relevant)."""
        if not passages:
            return []
        self.warm_up()
        out = self._model.predict([(query, p) for p in passages], batch_size=self.batch_size,
                                  show_progress_bar=False, convert_to_numpy=True)
        return [float(s) for s in out]

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int) -> list[Hit]:
        return rerank_by_scores(self.scores, query, hits, self.top, self.blend, top_k)


def _trained_blend(path: str) -> float:
    """The first-stage weight `consulta reranker train` chose for the model in `path` (0 if it did not write it)."""
    try:
        return float((read_manifest(Path(path)) or {}).get("blend") or 0.0)
    except (TypeError, ValueError):
        return 0.0


# next_token_logprobs(prompts, candidates) -> per prompt, {candidate: log-probability of its first token}
ScoreFn = Callable[[Sequence[str], Sequence[str]], list[dict[str, float]]]
# format_chat([{"role": ..., "content": ...}, ...]) -> the model's prompt text, ending where the answer starts
FormatFn = Callable[[list[dict[str, str]]], str]

RELEVANCE_SYSTEM = ("You judge search results. Given a question and a passage, answer Yes if the passage "
                    "contains the answer to the question, otherwise No. Answer with one word: Yes or No.")
_YES, _NO = ("Yes", "yes"), ("No", "no")


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class LlmReranker:
    """Pointwise yes/no re-ranking with the local LLM: score = log P(yes) - log P(no) as the answer's first token.

    Only the `top` first-stage hits are judged (each pair is one prompt of ~100-300 tokens, batched through
    the engine); the rest keep their first-stage order after them. `blend` > 0 mixes the first-stage rank
    back in (reciprocal-rank fusion of the LLM order and the first-stage order, weighted), which protects
    against a small model's mistakes. `score` is the engine's `next_token_logprobs`, `format_chat` its chat
    template; both are injected by the composition root, since retrieval imports nothing of ours.
    """

    def __init__(self, score: ScoreFn, *, format_chat: FormatFn | None = None, top: int = 8,
                 max_passage_chars: int = 800, blend: float = 0.0) -> None:
        if top < 1:
            raise ValueError(f"the LLM re-ranker needs top >= 1 (got {top})")
        self.score = score
        self.format_chat = format_chat
        self.top = top
        self.max_passage_chars = max_passage_chars
        self.blend = blend

    def prompt(self, query: str, passage: str) -> str:
        passage = " ".join(passage.split())[: self.max_passage_chars]
        user = f"Question: {query}\n\nPassage: {passage}\n\nDoes the passage answer the question? Yes or No."
        messages = [{"role": "system", "content": RELEVANCE_SYSTEM}, {"role": "user", "content": user}]
        if self.format_chat is not None:
            return self.format_chat(messages)
        return f"{RELEVANCE_SYSTEM}\n\n{user}\nAnswer:"

    def relevance(self, query: str, passages: Sequence[str]) -> list[float]:
        """log P(yes) - log P(no) for each passage (higher: more likely to answer the question)."""
        if not passages:
            return []
        rows = self.score([self.prompt(query, p) for p in passages], [*_YES, *_NO])
        return [_logsumexp([r[c] for c in _YES]) - _logsumexp([r[c] for c in _NO]) for r in rows]

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int) -> list[Hit]:
        if not hits:
            return []
        head, tail = list(hits[: self.top]), list(hits[self.top:])
        margins = self.relevance(query, [h.chunk.text for h in head])
        by_llm = sorted(range(len(head)), key=lambda i: (-margins[i], i))
        if self.blend > 0:
            llm_rank = {i: r for r, i in enumerate(by_llm, 1)}
            fused = {i: 1 / (60 + llm_rank[i]) + self.blend / (60 + i + 1) for i in range(len(head))}
            by_llm = sorted(range(len(head)), key=lambda i: (-fused[i], i))
        ranked = [Hit(head[i].chunk, margins[i], head[i].dense_score) for i in by_llm]
        floor = min(margins) - 1.0  # the unjudged tail stays below every judged hit, in its order
        ranked += [Hit(h.chunk, floor - n, h.dense_score) for n, h in enumerate(tail)]
        return ranked[:top_k]


# continuation_logprobs(prompts, continuations) -> per pair, the log-probability of each continuation token
SpanScoreFn = Callable[[Sequence[str], Sequence[str]], list[list[float]]]

QUERY_LIKELIHOOD_ASK = "Write a question that this passage answers."
QUERY_LIKELIHOOD_BLEND = 1.0  # the first-stage weight `mix` gives by default (docs/benchmarks/retrieval.md)


class QueryLikelihoodReranker:
    """Query-likelihood re-ranking with the local LLM (UPR, Sachan et al. 2022): a passage's score is the mean
    log-probability of the question's tokens when the model is asked to write a question about the passage.

    Unlike the yes/no judge it needs no instruction following (a small model writes plausible questions far
    better than it judges relevance), and it reads the question in the passage's light token by token, so
    it works in any language the model knows. Only the `top` first-stage hits are scored (one prompt of
    passage + question per pair, batched through the engine, logits on the question's rows only); the rest
    keep their first-stage order after them. `blend` mixes the first-stage order back in (`mix`). `score` is
    the engine's `continuation_logprobs`, `format_chat` its chat template (both injected by the composition
    root).
    """

    def __init__(self, score: SpanScoreFn, *, format_chat: FormatFn | None = None, top: int = 8,
                 max_passage_chars: int = 1200, blend: float = 0.0) -> None:
        if top < 1:
            raise ValueError(f"the query-likelihood re-ranker needs top >= 1 (got {top})")
        self.score = score
        self.format_chat = format_chat
        self.top = top
        self.max_passage_chars = max_passage_chars
        self.blend = blend

    def prompt(self, passage: str) -> str:
        passage = " ".join(passage.split())[: self.max_passage_chars]
        user = f"Passage: {passage}\n\n{QUERY_LIKELIHOOD_ASK}"
        if self.format_chat is not None:
            return self.format_chat([{"role": "user", "content": user}])
        return f"{user}\nQuestion:"

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        """Mean log P(question token | passage, question so far) for each passage (higher: more relevant)."""
        query = " ".join(query.split())
        if not passages or not query:
            return [0.0] * len(passages)
        if self.format_chat is None:
            query = " " + query
        rows = self.score([self.prompt(p) for p in passages], [query] * len(passages))
        return [sum(r) / len(r) if r else 0.0 for r in rows]

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int) -> list[Hit]:
        return rerank_by_scores(self.scores, query, hits, self.top, self.blend, top_k)
