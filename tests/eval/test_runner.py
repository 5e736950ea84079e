"""A run keeps going when one question fails, says so in its reports, and a resumed run asks only that one again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.assistant import Assistant
from app.settings import Settings
from eval.evaluate import EvalOptions, evaluate
from tests.conftest import TINY_MODEL
from tests.eval.conftest import QUESTIONS

pytestmark = pytest.mark.slow


def _rows(report: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (report / "rows.jsonl").read_text().splitlines())}


def test_a_question_that_raises_is_recorded_as_failed_and_the_others_are_scored(tiny_squad, tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path / "data", serving={"model": TINY_MODEL, "n_ctx": 2048, "max_sequences": 2,
                                                             "max_tokens": 24, "n_threads": 2})
    broken = QUESTIONS[1][1]  # q2
    answer = Assistant.answer

    def failing_answer(self, question, **kwargs):
        if question == broken:
            raise RuntimeError("the engine fell over")
        return answer(self, question, **kwargs)

    monkeypatch.setattr(Assistant, "answer", failing_answer)
    run = evaluate(settings, EvalOptions(dataset=tiny_squad, judge=False, report=tmp_path / "first"))
    rows = _rows(tmp_path / "first")
    assert set(rows) == {"q1", "q2", "q3", "q4"}
    assert rows["q2"]["error"] == "RuntimeError: the engine fell over" and rows["q2"]["failed_stage"] == "answering"
    assert all("answer" in rows[q] and "error" not in rows[q] for q in ("q1", "q3", "q4"))
    assert run["failed"] == 1 and run["configs"][0]["failed"] == 1
    metrics = run["configs"][0]["metrics"]
    assert "answer.f1" in metrics and "refusal.unanswerable_rate" in metrics  # scored over the three others
    assert metrics["retrieval.recall@10"] == 1.0
    for name in ("summary.md", "report.html"):
        text = (tmp_path / "first" / name).read_text()
        assert "1 of 4 questions failed" in text, name
    assert "the engine fell over" in (tmp_path / "first" / "report.html").read_text()

    monkeypatch.undo()  # the cause is fixed: --resume asks the failed question again, and only it
    run = evaluate(settings, EvalOptions(dataset=tiny_squad, judge=False, report=tmp_path / "second", resume=True))
    again = _rows(tmp_path / "second")
    assert run["failed"] == 0 and run["checkpoint"]["reused"] == 3 and run["configs"][0]["asked"] == 1
    assert "error" not in again["q2"] and "answer" in again["q2"]
    assert all(again[q]["answer"] == rows[q]["answer"] for q in ("q1", "q3", "q4"))
    assert "questions failed" not in (tmp_path / "second" / "summary.md").read_text()
