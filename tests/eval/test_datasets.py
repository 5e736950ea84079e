"""Dataset formats are detected from the folder and loaded into questions with what they are checked against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.datasets import DatasetError, detect_format, load_dataset
from eval.runner import aggregate
from tests.conftest import SHARED_DATA

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data (evaluation data) is not present")


@needs_data
@pytest.mark.parametrize(("folder", "fmt"), [("retrieval/cranfield", "beir"), ("retrieval/msmarco-mini", "beir"),
                                             ("qa/squad2-en-half", "squad"), ("qa/xquad/es", "squad"),
                                             ("pdf/financebench-dev", "financebench")])
def test_shared_sets_are_detected(folder, fmt):
    assert detect_format(SHARED_DATA / folder) == fmt


@needs_data
def test_financebench_relevance_is_the_evidence_page_one_based():
    ds = load_dataset(SHARED_DATA / "pdf/financebench-dev", limit=5, seed=1)
    item = ds.items[0]
    raw = {json.loads(line)["id"]: json.loads(line) for line in
           (SHARED_DATA / "pdf/financebench-dev/qa.jsonl").open(encoding="utf-8")}[item.id]
    ev = raw["evidence"][0]
    assert (ev["doc_name"], ev["page_num_0based"] + 1) in item.evidence_pages
    assert all(f.suffix == ".pdf" and f.is_file() for f in ds.files)
    assert len(ds.items) == 5 and ds.unit == "page"


@needs_data
def test_squad_sample_is_seeded_and_brings_its_articles():
    a = load_dataset(SHARED_DATA / "qa/squad2-en-half", limit=20, seed=3)
    b = load_dataset(SHARED_DATA / "qa/squad2-en-half", limit=20, seed=3)
    assert [i.id for i in a.items] == [i.id for i in b.items]
    assert a.has_unanswerable
    assert all(g in a.passages for i in a.items for g in i.relevant)


@needs_data
def test_beir_keeps_judged_queries_with_graded_gains():
    ds = load_dataset(SHARED_DATA / "retrieval/cranfield")
    assert len(ds.items) == 225 and len(ds.passages) == 1400 and not ds.generative
    assert {g for i in ds.items for g in i.relevant.values()} <= {1.0, 2.0, 3.0, 4.0}


def test_golden_jsonl_needs_its_documents(tmp_path: Path):
    f = tmp_path / "golden.jsonl"
    f.write_text(json.dumps({"question": "When does the office open?", "answers": ["8:00"],
                             "source": "/x/handbook.pdf", "page": 1}) + "\n", encoding="utf-8")
    assert detect_format(tmp_path) == "golden"
    with pytest.raises(DatasetError, match="--documents"):
        load_dataset(f)
    (tmp_path / "documents").mkdir()
    ds = load_dataset(tmp_path)
    assert ds.items[0].relevant == {"handbook.pdf": 1.0} and ds.items[0].evidence_pages == [("handbook", 1)]


def test_unknown_folder_says_what_it_expects(tmp_path: Path):
    with pytest.raises(DatasetError, match="BEIR"):
        detect_format(tmp_path)


def test_aggregate_leaves_out_what_the_dataset_cannot_support(tmp_path: Path):
    ds = load_dataset(_tiny_beir(tmp_path))
    rows = [{"impossible": False, "retrieval": {"hit@10": 1.0, "mrr@10": 0.5, "ndcg@10": 0.6, "recall@10": 1.0},
             "timings": {"retrieval_ms": 3.0}}]
    m = aggregate(rows, ds, 10, 1.0)
    assert m["retrieval.mrr@10"] == 0.5
    assert not any(k.startswith(("answer.", "refusal.", "citation.")) or k == "faithfulness" for k in m)


def _tiny_beir(root: Path) -> Path:
    (root / "qrels").mkdir()
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "", "text": "wing flutter"}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "flutter"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t2\n")
    return root
