"""`consulta reranker train/show`, reranker=cross-encoder and reranker=query-likelihood, run as a user runs them:
real processes, the bundled tiny GGUF writing the questions, the bundled MiniLM fine-tuned, the bundled Qwen 0.5B
scoring query likelihood."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.retrieval.reranker_corpus import PASSAGES


@pytest.fixture(scope="module")
def env(base_env, tmp_path_factory):
    return {**base_env, "CONSULTA_DATA_DIR": str(tmp_path_factory.mktemp("reranker-data"))}


@pytest.fixture(scope="module")
def handbook(tmp_path_factory):
    d = tmp_path_factory.mktemp("handbook")
    for i, (text, _) in enumerate(PASSAGES):
        title, body = text.split(". ", 1)
        (d / f"{i:02d}-{title.lower().replace(' ', '-')}.md").write_text(f"# {title}\n\n{body}\n", encoding="utf-8")
    return d


def test_train_before_ingest_says_what_to_do(env):
    r = run_cli(["reranker", "train"], env)
    assert r.returncode == 1
    assert "consulta ingest" in r.stderr and "Traceback" not in r.stderr


def test_cross_encoder_without_a_model_says_how_to_get_one(env, handbook):
    r = run_cli(["ingest", str(handbook), "--collection", "hr", "--json"], env)
    assert r.returncode == 0, r.stderr
    r = run_cli(["search", "parental leave", "--json"], {**env, "CONSULTA_RETRIEVAL__RERANKER": "cross-encoder"})
    assert r.returncode == 1
    assert "consulta reranker train" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_train_then_search_with_the_trained_reranker(env, handbook):
    r = run_cli(["ingest", str(handbook), "--collection", "hr", "--json"], env)
    assert r.returncode == 0, r.stderr
    r = run_cli(["reranker", "train", "--questions", "12", "--epochs", "1", "--json"], env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["questions_written"] >= 4 and report["pairs"] >= 4 and report["held_out"] >= 1
    assert set(report["reranked"]) == {"hit@1", "mrr@10", "ndcg@10"}
    assert report["path"].endswith("reranker")

    shown = run_cli(["reranker", "show", "--json"], env)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["pairs"] == report["pairs"] and info["trained_at"] and "questions" not in info

    query = "How many weeks of parental leave do parents get?"
    plain = json.loads(run_cli(["search", query, "--k", "5", "--json"], env).stdout)["hits"]
    r = run_cli(["search", query, "--k", "5", "--json"], {**env, "CONSULTA_RETRIEVAL__RERANKER": "cross-encoder"})
    assert r.returncode == 0, r.stderr
    reranked = json.loads(r.stdout)["hits"]
    assert len(reranked) == 5
    # the same contract, the same first-stage candidates, now in the cross-encoder's order and with its scores
    assert {h["chunk_id"] for h in reranked} <= {h["chunk_id"] for h in
                                                  json.loads(run_cli(["search", query, "--k", "20", "--json"],
                                                                     env).stdout)["hits"]}
    assert [h["score"] for h in reranked] == sorted((h["score"] for h in reranked), reverse=True)
    assert [h["score"] for h in reranked] != [h["score"] for h in plain]


@pytest.mark.slow
@pytest.mark.parametrize(("query", "source"), [
    ("How many weeks of parental leave do parents get?", "parental-leave"),
    ("Where can I leave my bicycle?", "parking"),
])
def test_search_with_the_query_likelihood_reranker(env, handbook, query, source):
    r = run_cli(["ingest", str(handbook), "--collection", "hr", "--json"], env)
    assert r.returncode == 0, r.stderr
    first_stage = json.loads(run_cli(["search", query, "--k", "20", "--json"], env).stdout)["hits"]
    qlm = {**env, "CONSULTA_RETRIEVAL__RERANKER": "query-likelihood", "CONSULTA_RETRIEVAL__RERANK_TOP": "6",
           "CONSULTA_RETRIEVAL__RERANK_MODEL": "qwen2.5-coder-0.5b"}
    r = run_cli(["search", query, "--k", "5", "--json"], qlm)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)["hits"]
    assert source in hits[0]["source"]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert {h["chunk_id"] for h in hits} <= {h["chunk_id"] for h in first_stage[:6]}, "it re-orders the top 6 only"


def test_query_likelihood_without_a_local_model_says_what_to_set(env, handbook):
    r = run_cli(["ingest", str(handbook), "--collection", "hr", "--json"], env)
    assert r.returncode == 0, r.stderr
    r = run_cli(["search", "parental leave", "--json"],
                {**env, "CONSULTA_RETRIEVAL__RERANKER": "query-likelihood", "CONSULTA_SERVING__BACKEND": "remote",
                 "CONSULTA_SERVING__REMOTE_URL": "http://127.0.0.1:9/v1"})
    assert r.returncode == 1
    assert "CONSULTA_RETRIEVAL__RERANK_MODEL" in r.stderr and "Traceback" not in r.stderr
