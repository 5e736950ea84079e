"""After ranking: near-duplicate removal, MMR, and extractive compression of the context (real e5 vectors)."""

from __future__ import annotations

import numpy as np

from retrieval.compressor import ExtractiveCompressor, split_sentences
from retrieval.diversity import drop_near_duplicates, mmr
from retrieval.types import Chunk, Hit

HOLIDAY = "Every employee is entitled to 25 days of paid holiday per year."
HOLIDAY_COPY = "Every employee is entitled to 25 days of paid holiday each year."
LUNCH = "The canteen serves lunch from 12:00 to 15:00."


def _hits(texts):
    return [Hit(Chunk(f"c{i}", f"d{i}", t, 0, len(t), {"language": "en"}), 1.0 - i / 10) for i, t in enumerate(texts)]


def test_near_duplicates_are_dropped_and_mmr_prefers_a_new_topic(embedder):
    texts = [HOLIDAY, HOLIDAY_COPY, LUNCH]
    vectors = embedder.embed_documents(texts)
    hits = _hits(texts)
    assert [h.chunk.id for h in drop_near_duplicates(hits, vectors, 0.95)] == ["c0", "c2"]
    assert [h.chunk.id for h in drop_near_duplicates(hits, vectors, 1.0)] == ["c0", "c1", "c2"]
    q = embedder.embed_query("holiday and lunch")
    assert [h.chunk.id for h in mmr(q, hits, vectors, 2, lam=0.5)] == ["c0", "c2"]
    assert [h.chunk.id for h in mmr(q, hits, vectors, 2, lam=1.0)] == ["c0", "c1"], "lam=1: relevance only"


HANDBOOK = ("The office opens at 8:00 and closes at 18:00. Staff may work from home two days per week. "
            "Parking is free for visitors. Travel expenses are reimbursed within 30 days of the receipt. "
            "The canteen serves lunch from noon. Fire drills take place every March.")
VACACIONES = ("El personal tiene derecho a 25 días de vacaciones pagadas al año. Las vacaciones se piden en el "
              "portal. La cafetería cierra en agosto. El aparcamiento es gratuito.")


def test_sentences_are_split_at_their_ends():
    spans = split_sentences("First one. Second: 8.5 euros! ¿Tercera? Yes.\n\nNew paragraph")
    assert len(spans) == 5


def test_compressor_keeps_the_answer_within_the_budget(embedder):
    hits = _hits([HANDBOOK, VACACIONES])
    for comp in (ExtractiveCompressor(budget_tokens=40),
                 ExtractiveCompressor(embedder.embed_query, embedder.embed_documents, budget_tokens=40)):
        out = comp.compress("How soon are travel expenses reimbursed?", hits, language="en")
        assert out.tokens_after <= 40 < out.tokens_before and out.saved > 0.4
        assert "30 days" in out.hits[0].chunk.text and "Fire drills" not in out.hits[0].chunk.text
        assert out.hits[0].chunk.id == "c0" and out.hits[0].chunk.start == 0, "citations still point at the chunk"
        es = comp.compress("¿Cuántos días de vacaciones hay?", hits, language="es")
        assert any("25 días" in h.chunk.text for h in es.hits)
    small = ExtractiveCompressor(budget_tokens=1000).compress("anything", hits)
    assert small.hits == hits and small.saved == 0, "a context within the budget is left alone"
    assert np.isclose(ExtractiveCompressor(budget_tokens=40).compress("x", []).saved, 0)
