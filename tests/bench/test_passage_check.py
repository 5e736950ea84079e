"""bench/passage_check.py trains only on train articles, and its negatives lack the answer as the scorer reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.passage_check import pairs
from bench.qa_sets import _qa_folder, article_of, read_jsonl
from eval.metrics import contains_answer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data (evaluation data) is not present")


def _articles(split: str) -> set[tuple[str, str]]:
    out = set()
    for name, _, question, passage, _ in pairs(DATA, split, 150):
        ids = {p["_id"] for p in read_jsonl(_qa_folder(DATA, name) / "passages.jsonl") if p["text"] == passage}
        out |= {(name.split("-")[0], article_of(i)) for i in ids}
    return out


def test_training_pairs_come_from_no_article_that_is_reported():
    train = _articles("train")
    assert train and not train & (_articles("dev") | _articles("test"))


def test_each_kind_is_there_and_related_passages_lack_every_reference():
    rows = pairs(DATA, "train", 40)
    kinds = {(name, kind) for name, kind, *_ in rows}
    assert ("squad2", "adversarial") in kinds and ("xquad-es", "related") in kinds
    answers = {r["question"]: r.get("answers") or [] for name in ("squad2", "xquad-en", "xquad-es")
               for r in read_jsonl(_qa_folder(DATA, name) / "qa.jsonl")}
    for _, kind, question, passage, label in rows:
        if kind == "related":
            assert label == 0.0 and not contains_answer(passage, answers[question])  # as the answers are scored
