"""Extractive context compression: keep the sentences of the retrieved passages that matter to the question.

On this CPU the prompt is the bottleneck (prompt processing runs at about 80-180 tokens/s with the bundled
models), so cutting the context the model reads cuts the time to the first answer token. The compressor
scores each sentence by its embedding cosine with the question plus its share of the question's BM25
terms, always keeps each passage's best sentence, then adds the best remaining sentences while the whole
context fits `budget_tokens`. Sentences keep their document order, and a passage's kept sentences are
joined with " … " where text was left out. Offsets into the chunk are not changed: citations still point
at the whole chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.bm25 import Analyzers
from retrieval.types import Chunk, Hit

# A sentence ends at . ! ? … before a capital, a digit or a footnote mark ("font. ⁸Many programs"), at a blank
# line, or before a bullet.
_SENTENCE_END = re.compile(
    r"(?<=[.!?…])\s+(?=[\"'«¿¡(\[]?[A-ZÀ-ÖØ-Þ0-9\u00b9\u00b2\u00b3\u2070-\u2079])|\n{2,}|\n(?=\s*[-*•]\s)")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences in `text` (whitespace trimmed, none empty)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def approx_tokens(text: str) -> int:
    """About 4 characters a token (the bundled tokenizers on English/Spanish prose): a cheap default."""
    return max(1, (len(text) + 3) // 4)


@dataclass(frozen=True, slots=True)
class Compression:
    hits: list[Hit]          # the same hits, each chunk's text replaced by its kept sentences
    tokens_before: int
    tokens_after: int

    @property
    def saved(self) -> float:
        return 1 - self.tokens_after / self.tokens_before if self.tokens_before else 0.0


class ExtractiveCompressor:
    """Keeps the question-relevant sentences of the hits within a token budget.

    `embed_query` / `embed_passages` are the retrieval embedder's methods; without them sentences are
    scored by the question's terms alone (stemmed, stopwords dropped), which costs nothing, while
    embedding every sentence costs seconds per question on 2 cores. `count_tokens` is the
    model's tokenizer (default: ~4 characters a token); `language` picks the analyser for the question.
    """

    def __init__(self, embed_query: Callable[[str], np.ndarray] | None = None,
                 embed_passages: Callable[[Sequence[str]], np.ndarray] | None = None, *, budget_tokens: int = 600,
                 count_tokens: Callable[[str], int] = approx_tokens, lexical_weight: float = 0.3) -> None:
        if budget_tokens < 1:
            raise ValueError(f"budget_tokens must be positive (got {budget_tokens})")
        self.embed_query = embed_query
        self.embed_passages = embed_passages
        self.budget_tokens = budget_tokens
        self.count_tokens = count_tokens
        self.lexical_weight = lexical_weight
        self._analyzers = Analyzers()

    def compress(self, query: str, hits: Sequence[Hit], *, language: str | None = None) -> Compression:
        pieces: list[tuple[int, int, str]] = []  # (hit index, sentence index, text)
        per_hit: list[list[tuple[int, int]]] = []
        for h_i, h in enumerate(hits):
            spans = split_sentences(h.chunk.text)
            per_hit.append(spans)
            pieces += [(h_i, s_i, h.chunk.text[s:e]) for s_i, (s, e) in enumerate(spans)]
        before = sum(self.count_tokens(h.chunk.text) for h in hits)
        if not pieces or before <= self.budget_tokens:
            return Compression(list(hits), before, before)
        texts = [t for _, _, t in pieces]
        if self.embed_passages is not None and self.embed_query is not None:
            dense = self.embed_passages(texts) @ np.asarray(self.embed_query(query), dtype=np.float32)
        else:
            dense = np.zeros(len(texts), dtype=np.float32)
        q_terms = set(self._analyzers.get(language).terms(query))
        lexical = np.array([len(q_terms & set(self._analyzers.get(hits[h].chunk.meta.get("language") or language)
                                             .terms(t))) / max(1, len(q_terms)) for h, _, t in pieces])
        score = dense + self.lexical_weight * lexical if self.embed_passages is not None else lexical
        cost = [self.count_tokens(t) + 1 for t in texts]
        keep: set[int] = set()
        used = 0
        order = np.argsort(-score, kind="stable")
        for h_i in range(len(hits)):  # each passage's best sentence first, passages in rank order
            best = next(int(i) for i in order if pieces[i][0] == h_i) if per_hit[h_i] else None
            if best is not None and used + cost[best] <= self.budget_tokens:
                keep.add(best)
                used += cost[best]
        for i in order:
            i = int(i)
            if i not in keep and used + cost[i] <= self.budget_tokens:
                keep.add(i)
                used += cost[i]
        out, after = [], 0
        for h_i, h in enumerate(hits):
            kept = sorted(s_i for (hh, s_i, _), i in zip(pieces, range(len(pieces)), strict=True)
                          if hh == h_i and i in keep)
            if not kept:
                continue  # nothing of this passage fits: it is dropped
            spans = per_hit[h_i]
            parts, prev = [], None
            for s_i in kept:
                if prev is not None and s_i != prev + 1:
                    parts.append("…")
                parts.append(h.chunk.text[spans[s_i][0]:spans[s_i][1]])
                prev = s_i
            text = " ".join(parts)
            c = h.chunk
            out.append(Hit(Chunk(c.id, c.document_id, text, c.start, c.end, {**c.meta, "compressed": True}),
                           h.score, h.dense_score))
            after += self.count_tokens(text)
        return Compression(out, before, after)
