"""The LLM stages of retrieval with the real bundled Qwen 0.5B through the real BatchingEngine:
yes/no and query-likelihood re-ranking, and query expansion (multi-query, HyDE, decomposition)."""

from __future__ import annotations

import pytest

from retrieval.expansion import QueryExpander
from retrieval.language import detect_language
from retrieval.reranker import LlmReranker, QueryLikelihoodReranker
from retrieval.retriever import Retriever
from retrieval.store import FaissStore, IndexIdentity
from retrieval.types import Chunk, Hit

pytestmark = pytest.mark.slow

PASSAGES = [
    "The canteen on the ground floor serves lunch from 12:00 to 15:00.",
    "Visitors must sign in at reception and wear a badge at all times.",
    "Meeting rooms are booked through the intranet calendar.",
    "Every employee is entitled to 25 days of paid holiday per year.",
    "Travel expenses are reimbursed within 30 days of submitting the receipt.",
    "El comedor abre a las ocho y sirve comidas hasta las tres.",
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from app.models import resolve_model
    from serving.engine import BatchingEngine

    # `make test` installs the model's packages; a missing model is a failed install, not a reason to skip
    path = resolve_model("qwen2.5-coder-0.5b", tmp_path_factory.mktemp("models"))
    eng = BatchingEngine(str(path), n_ctx=4096, n_threads=2, max_sequences=4)
    eng.warm_up()
    yield eng
    eng.close()


def _hits(texts):
    return [Hit(Chunk(f"c{i}", f"d{i}", t, 0, len(t), {"language": "en"}), 1.0 - i / 10) for i, t in enumerate(texts)]


def test_llm_reranker_lifts_the_passage_that_answers(engine):
    hits = _hits(PASSAGES[:4])  # the answer is last in the first-stage order
    reranker = LlmReranker(engine.next_token_logprobs, format_chat=engine.format_chat, top=4)
    ranked = reranker.rerank("How many days of paid holiday does an employee get?", hits, 4)
    assert ranked[0].chunk.id == "c3"
    assert [h.score for h in ranked] == sorted((h.score for h in ranked), reverse=True)


def test_llm_reranker_judges_only_the_top_few(engine):
    prompts_seen = []

    def score(prompts, candidates):
        prompts_seen.extend(prompts)
        return engine.next_token_logprobs(prompts, candidates)

    hits = _hits(PASSAGES)
    ranked = LlmReranker(score, format_chat=engine.format_chat, top=2).rerank("When is lunch served?", hits, 5)
    assert len(prompts_seen) == 2, "one prompt per judged passage, and only the top 2"
    assert {h.chunk.id for h in ranked[:2]} == {"c0", "c1"}
    assert [h.chunk.id for h in ranked[2:]] == ["c2", "c3", "c4"], "the unjudged keep their order, after"


PASSAGES_ES = [
    "El comedor de la planta baja sirve comidas de doce a tres de la tarde.",
    "Las visitas deben registrarse en recepción y llevar la acreditación en todo momento.",
    "Las salas de reuniones se reservan en el calendario de la intranet.",
    "Los gastos de viaje se reembolsan en un plazo de treinta días desde la entrega del recibo.",
]


@pytest.mark.parametrize(("passages", "question", "answer"), [
    (PASSAGES[:4], "How many days of paid holiday does an employee get?", "c3"),
    (PASSAGES[:4], "Where do I book a meeting room?", "c2"),
    (PASSAGES_ES, "¿En cuánto tiempo me devuelven los gastos de viaje?", "c3"),
])
def test_query_likelihood_reranker_lifts_the_passage_that_answers(engine, passages, question, answer):
    hits = _hits(passages)
    ranked = QueryLikelihoodReranker(engine.continuation_logprobs, format_chat=engine.format_chat,
                                     top=4).rerank(question, hits, 4)
    assert ranked[0].chunk.id == answer
    assert [h.score for h in ranked] == sorted((h.score for h in ranked), reverse=True)


def test_query_likelihood_reranker_scores_only_the_top_few_and_blends_the_first_stage_back(engine):
    pairs_seen = []

    def score(prompts, continuations):
        pairs_seen.extend(zip(prompts, continuations, strict=True))
        return engine.continuation_logprobs(prompts, continuations)

    hits = _hits(PASSAGES)
    question = "How many days of paid holiday does an employee get?"
    ranked = QueryLikelihoodReranker(score, format_chat=engine.format_chat, top=4).rerank(question, hits, 6)
    assert len(pairs_seen) == 4 and all(c == question for _, c in pairs_seen), "one pair per scored passage"
    assert ranked[0].chunk.id == "c3"
    assert [h.chunk.id for h in ranked[4:]] == ["c4", "c5"], "the unscored keep their order, after"
    # a heavy first-stage weight keeps the first-stage order
    kept = QueryLikelihoodReranker(score, format_chat=engine.format_chat, top=4, blend=10.0).rerank(question, hits, 4)
    assert [h.chunk.id for h in kept] == ["c0", "c1", "c2", "c3"]


def _generate(engine):
    from serving.generator import SamplingParams

    return lambda prompt, n: engine.generate([{"role": "user", "content": prompt}],
                                             SamplingParams(max_tokens=n, temperature=0.0)).text


def test_multi_part_question_is_split_and_both_parts_are_found(engine, embedder, tmp_path):
    store = FaissStore(tmp_path / "index")
    chunks = [Chunk(f"c{i}", f"d{i}", t, 0, len(t), {"language": detect_language(t)})
              for i, t in enumerate(PASSAGES)]
    with store.writer(IndexIdentity(embedder.model_id, embedder.dim)) as w:
        w.add(chunks, embedder.embed_documents(PASSAGES))
    question = "How many days of paid holiday do employees get, and how soon are travel expenses reimbursed?"
    expander = QueryExpander(generate=_generate(engine), decompose=True, multi_query=2, hyde=True)
    expansion = expander.expand(question)
    assert len(expansion.sub_queries) >= 2, expansion
    assert expansion.queries and expansion.passages, "rewrites and a hypothetical passage were written"
    retriever = Retriever(embedder, FaissStore(tmp_path / "index"), expander=expander, candidates=6,
                          detect_language=detect_language)
    top2 = {h.chunk.id for h in retriever.retrieve(question, 2)}
    assert top2 == {"c3", "c4"}
    hits = retriever.retrieve(question, 3)
    q = embedder.embed_query(question)
    for h in hits:  # the cosine the refusal threshold reads stays the question's own
        assert h.dense_score == pytest.approx(float(embedder.embed_documents([h.chunk.text])[0] @ q), abs=1e-4)


def test_expansion_failure_falls_back_to_the_question():
    def broken(prompt, n):
        raise RuntimeError("engine gone")

    expansion = QueryExpander(generate=broken, multi_query=2, hyde=True).expand("holiday days")
    assert expansion.queries == () and expansion.passages == ()
