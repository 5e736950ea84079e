"""Fixtures for the evaluation tests: tiny datasets written by the tests, real models, real Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL
from tests.ui.conftest import browser  # noqa: F401 - the same per-module headless Chromium

PASSAGES = [
    ("Office#0", "Office", "The office opens at 8:00 and closes at 18:00 from Monday to Friday. Staff may work "
                           "from home two days per week after agreeing it with their manager."),
    ("Office#1", "Office", "Travel expenses are reimbursed within 30 days when the receipt is uploaded to the "
                           "finance portal. Meals abroad are covered up to 45 euros per day."),
    ("Canteen#0", "Canteen", "The canteen serves lunch from 12:30 to 14:30. A full menu costs 6 euros for staff "
                             "and 9 euros for visitors."),
]
QUESTIONS = [
    ("q1", "At what time does the office open?", ["8:00"], False, "Office#0"),
    ("q2", "How much does a canteen menu cost for staff?", ["6 euros"], False, "Canteen#0"),
    ("q3", "Within how many days are travel expenses reimbursed?", ["30 days"], False, "Office#1"),
    ("q4", "What is the name of the company's chief executive?", [], True, "Office#0"),
]


def write_squad_set(d: Path, questions: list[tuple[str, str, list[str], bool, str]],
                    passages: list[tuple[str, str, str]] = PASSAGES) -> Path:
    """A SQuAD 2.0-shaped folder (passages.jsonl, qa.jsonl) holding `questions` over `passages`."""
    d.mkdir(parents=True, exist_ok=True)
    with (d / "passages.jsonl").open("w", encoding="utf-8") as f:
        for pid, title, text in passages:
            f.write(json.dumps({"_id": pid, "title": title, "text": text}) + "\n")
    with (d / "qa.jsonl").open("w", encoding="utf-8") as f:
        for qid, q, answers, impossible, gold in questions:
            f.write(json.dumps({"id": qid, "question": q, "answers": answers, "is_impossible": impossible,
                                "gold_passage_ids": [gold], "title": gold.split("#")[0]}) + "\n")
    return d


@pytest.fixture(scope="session")
def tiny_squad(tmp_path_factory) -> Path:
    """A SQuAD 2.0-shaped set: three passages in two articles, three answerable questions, one unanswerable."""
    return write_squad_set(tmp_path_factory.mktemp("tiny-squad"), QUESTIONS)


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-beir")
    docs = {"d1": "Wing flutter at transonic speeds was measured in the wind tunnel.",
            "d2": "Boundary layer transition on a flat plate in supersonic flow.",
            "d3": "Heat transfer to a blunt body re-entering the atmosphere.",
            "d4": "Buckling of thin cylindrical shells under axial compression."}
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                            for k, v in docs.items()), encoding="utf-8")
    queries = {"1": "wing flutter in transonic flow", "2": "buckling of cylindrical shells",
               "3": "heat transfer on re-entry bodies"}
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()),
                                     encoding="utf-8")
    (d / "qrels").mkdir()
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t2\n2\td4\t1\n3\td3\t1\n3\td2\t1\n")
    return d


@pytest.fixture(scope="session")
def eval_env(tmp_path_factory) -> dict[str, str]:
    """Settings for eval runs: a fresh data dir, the tiny model, small batches, 2 threads."""
    import os

    data = tmp_path_factory.mktemp("eval-data")
    return {**os.environ, "CONSULTA_DATA_DIR": str(data), "CONSULTA_SERVING__MODEL": TINY_MODEL,
            "CONSULTA_SERVING__N_CTX": "4096", "CONSULTA_SERVING__MAX_SEQUENCES": "2",
            "CONSULTA_SERVING__MAX_TOKENS": "40", "CONSULTA_SERVING__N_THREADS": "2", "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1"}
