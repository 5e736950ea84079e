"""The retrieval settings reach the retriever the composition root builds (no model is loaded)."""

from __future__ import annotations

from app.container import Services
from app.settings import Settings
from retrieval.reranker import QUERY_LIKELIHOOD_BLEND, LlmReranker, NoopReranker, QueryLikelihoodReranker


def test_settings_choose_the_retrieval_stages(tmp_path):
    s = Services(Settings(data_dir=tmp_path, retrieval={
        "reranker": "llm", "rerank_top": 5, "feedback": 3, "multi_query": 2, "hyde": True, "decompose": True,
        "diversity": "mmr", "index_type": "hnsw", "hnsw_ef_search": 64, "compress_tokens": 300}))
    r = s.retriever
    assert isinstance(r.reranker, LlmReranker) and r.reranker.top == 5
    assert r.feedback == 3 and r.diversity == "mmr"
    assert r.expander.multi_query == 2 and r.expander.hyde and r.expander.decompose
    assert s.store.index_config.kind == "hnsw" and s.store.index_config.ef_search == 64
    assert s.compressor.budget_tokens == 300
    assert not s.generator_loaded, "building the retriever does not load the model"
    rrf = Services(Settings(data_dir=tmp_path, retrieval={"fusion": "rrf", "rrf_k": 30}))
    assert (rrf.retriever.fusion, rrf.retriever.rrf_k, rrf.first_stage.fusion) == ("rrf", 30, "rrf")


def test_defaults_add_no_llm_stage(tmp_path):
    s = Services(Settings(data_dir=tmp_path))
    assert isinstance(s.retriever.reranker, NoopReranker) and s.retriever.expander is None
    assert s.store.index_config.kind == "auto"
    # extractive compression (no model) is on: the answering prompt reads the question's 300 best tokens
    assert s.compressor is not None and s.compressor.budget_tokens == 300
    assert Services(Settings(data_dir=tmp_path, retrieval={"compress_tokens": None})).compressor is None
    assert (s.retriever.fusion, s.retriever.fusion_depth, s.first_stage.fusion) == ("score", 100, "score")


def test_query_likelihood_reranker_is_wired_to_the_serving_engine(tmp_path):
    s = Services(Settings(data_dir=tmp_path, retrieval={"reranker": "query-likelihood", "rerank_top": 6}))
    r = s.retriever.reranker
    assert isinstance(r, QueryLikelihoodReranker) and r.top == 6 and r.blend == QUERY_LIKELIHOOD_BLEND
    assert r.score == s._score_continuation
    explicit = Services(Settings(data_dir=tmp_path, retrieval={"reranker": "query-likelihood", "rerank_blend": 0}))
    assert explicit.retriever.reranker.blend == 0.0
    assert not s.generator_loaded
