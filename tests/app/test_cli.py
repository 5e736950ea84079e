"""The command-line contract (`consulta ingest/search/ask --json`) run as a user runs it: a real process."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def env(base_env, tmp_path_factory):
    return {**base_env, "CONSULTA_DATA_DIR": str(tmp_path_factory.mktemp("cli-data"))}


@pytest.fixture(scope="module")
def ingested(env, corpus_dir):
    r = run_cli(["ingest", str(corpus_dir), "--collection", "demo", "--json"], env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_search_before_ingest_says_what_to_do(env):
    r = run_cli(["search", "anything"], env)
    assert r.returncode == 1
    assert "no index yet" in r.stderr and "consulta ingest" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_ingest_json_summary(ingested):
    statuses = {f["source"].rsplit("/", 1)[-1]: f["status"] for f in ingested["files"]}
    assert statuses == {"consulta.md": "ingested", "handbook.pdf": "ingested"}
    assert ingested["chunks_added"] == ingested["total_chunks"] > 0
    assert ingested["collection"] == "demo"


def test_ingest_again_skips_unchanged(env, corpus_dir, ingested):
    r = run_cli(["ingest", str(corpus_dir), "--collection", "demo", "--json"], env)
    assert r.returncode == 0
    assert {f["status"] for f in json.loads(r.stdout)["files"]} == {"unchanged"}


def test_search_json_hits_carry_page_and_source(env, ingested):
    r = run_cli(["search", "When are travel expenses reimbursed?", "--k", "3", "--json"], env)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)["hits"]
    assert 1 <= len(hits) <= 3
    assert {"chunk_id", "source", "page", "section", "score", "text"} <= set(hits[0])
    assert hits[0]["source"].endswith("handbook.pdf") and hits[0]["page"] == 2
    assert "reimbursed" in hits[0]["text"]


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_search_json_is_the_same_contract_in_every_retrieval_mode(env, ingested, mode):
    r = run_cli(["search", "travel expenses reimbursed", "--k", "2", "--json"],
                {**env, "CONSULTA_RETRIEVAL__MODE": mode})
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)["hits"]
    assert {"chunk_id", "source", "page", "section", "score", "text", "dense_score"} <= set(hits[0])
    assert "reimbursed" in hits[0]["text"] and hits[0]["page"] == 2
    assert all(0 < h["dense_score"] <= 1.0001 for h in hits), "the embedding cosine, whatever the mode"


def test_unknown_retrieval_mode_is_one_clear_line(env, ingested):
    r = run_cli(["search", "expenses"], {**env, "CONSULTA_RETRIEVAL__MODE": "fuzzy"})
    assert r.returncode == 1
    assert "retrieval.mode" in r.stderr and "Traceback" not in r.stderr


def test_search_in_unknown_collection_finds_nothing(env, ingested):
    r = run_cli(["search", "expenses", "--collection", "nope", "--json"], env)
    assert r.returncode == 0 and json.loads(r.stdout)["hits"] == []


def test_ask_json_contract(env, ingested):
    r = run_cli(["ask", "When are travel expenses reimbursed?", "--json"], env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"answer", "refused", "citations", "timings"} <= set(out)
    assert isinstance(out["refused"], bool) and out["answer"]
    assert {"retrieval_ms", "ttft_ms", "total_ms"} <= set(out["timings"])
    if not out["refused"]:
        c = out["citations"][0]
        assert {"source", "page", "section", "chunk_id", "text"} <= set(c)
        assert c["source"].endswith(("handbook.pdf", "consulta.md"))


def test_ask_below_the_relevance_threshold_refuses_in_the_question_language(env, ingested):
    """No passage is relevant enough (threshold raised above any match): refused without asking the model."""
    r = run_cli(["ask", "¿Cuál es la capital de Mongolia y cuántos habitantes tiene?", "--json"],
                {**env, "CONSULTA_RETRIEVAL__MIN_SCORE": "0.99"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["refused"] is True and out["citations"] == []
    assert "Los documentos no lo dicen" in out["answer"]
    assert out["sources"], "the closest passages are still shown"
    assert out["timings"]["ttft_ms"] is None, "the model was not asked"


def test_missing_path_is_one_line(env):
    r = run_cli(["ingest", "/no/such/folder"], env)
    assert r.returncode == 1 and "/no/such/folder: no such file or folder" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_model_file_is_one_line(env, ingested):
    r = run_cli(["ask", "When are travel expenses reimbursed?"],
                {**env, "CONSULTA_SERVING__MODEL": "/no/model.gguf"})
    assert r.returncode == 1 and "model file not found: /no/model.gguf" in r.stderr
    assert "Traceback" not in r.stderr


def test_invalid_setting_is_named(env):
    r = run_cli(["search", "x"], {**env, "CONSULTA_RETRIEVAL__K": "lots"})
    assert r.returncode == 1 and "retrieval.k" in r.stderr and "Traceback" not in r.stderr
