"""`consulta eval run --resume` picks up where a killed run stopped; a fresh run starts afresh."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eval.checkpoint import Checkpoint
from tests.conftest import REPO, run_cli
from tests.eval.conftest import write_squad_set

# twelve answerable questions over the three passages, so the tiny model generates for each of them
QUESTIONS = [(f"r{n:02d}", q, [a], False, gold) for n, (q, a, gold) in enumerate([
    ("At what time does the office open?", "8:00", "Office#0"),
    ("At what time does the office close?", "18:00", "Office#0"),
    ("How many days per week may staff work from home?", "two", "Office#0"),
    ("Who must agree to working from home?", "their manager", "Office#0"),
    ("Within how many days are travel expenses reimbursed?", "30 days", "Office#1"),
    ("Where is the receipt uploaded?", "the finance portal", "Office#1"),
    ("How much is covered for meals abroad per day?", "45 euros", "Office#1"),
    ("When does the canteen serve lunch?", "from 12:30 to 14:30", "Canteen#0"),
    ("How much does a full menu cost for staff?", "6 euros", "Canteen#0"),
    ("How much does a full menu cost for visitors?", "9 euros", "Canteen#0"),
    ("On which days is the office open?", "Monday to Friday", "Office#0"),
    ("What is covered up to 45 euros per day?", "Meals abroad", "Office#1"),
])]


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in out if "row" in r]


@pytest.mark.slow
def test_resume_after_a_kill_asks_only_the_missing_questions(tmp_path, eval_env):
    dataset = write_squad_set(tmp_path / "set", QUESTIONS)
    env = {**eval_env, "CONSULTA_DATA_DIR": str(tmp_path / "data"), "CONSULTA_SERVING__MAX_SEQUENCES": "1"}
    args = ["eval", "run", "--dataset", str(dataset), "--no-judge", "--json", "--concurrency", "1"]
    checkpoints = tmp_path / "data" / "eval" / "checkpoints"
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "consulta", *args], env=env, cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:  # kill -9 once three questions are in the checkpoint
            files = list(checkpoints.glob("*.jsonl"))
            if files and len(_records(files[0])) >= 3:
                break
            assert proc.poll() is None, "the run ended before it could be killed: " + \
                (tmp_path / "killed.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no rows reached the checkpoint"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    checkpoint = files[0]
    with checkpoint.open("a", encoding="utf-8") as f:  # as if killed in the middle of writing a line
        f.write('{"config": "default", "id": "r11", "stage": "answ')
    before = {r["id"]: r["row"] for r in _records(checkpoint)}
    assert 3 <= len(before) < len(QUESTIONS)

    report = tmp_path / "report"
    r = run_cli([*args, "--resume", "--report", str(report)], env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["n"] == len(QUESTIONS) and out["failed"] == 0
    assert out["checkpoint"]["reused"] == len(before) and out["checkpoint"]["resumed"] is True
    assert f"resumed: {len(before)}" in r.stderr
    assert "answer.f1" in out["metrics"]
    summary = json.loads((report / "summary.json").read_text())
    assert summary["configs"][0]["asked"] == len(QUESTIONS) - len(before)
    rows = {row["id"]: row for row in map(json.loads, (report / "rows.jsonl").read_text().splitlines())}
    assert set(rows) == {q[0] for q in QUESTIONS}  # the final report has every question
    assert all(rows[q]["answer"] == before[q]["answer"] for q in before)  # reused, not asked again
    answered = [rec["id"] for rec in _records(checkpoint) if rec["stage"] == "answered"]
    assert sorted(answered) == sorted(q[0] for q in QUESTIONS)  # each question was answered exactly once


def test_a_fresh_run_replaces_the_checkpoint_and_a_torn_line_is_skipped(tmp_path):
    description = {"dataset": "set", "questions": 2}
    first = Checkpoint.open(tmp_path, description, resume=False)
    first.write({"config": "default", "id": "q1", "answer": "8:00"}, "answered")
    first.close()
    with first.path.open("a", encoding="utf-8") as f:  # killed in the middle of writing q2
        f.write('{"config": "default", "id": "q2", "stage": "answ')

    resumed = Checkpoint.open(tmp_path, description, resume=True)
    assert resumed.rows("default") == {"q1": {"config": "default", "id": "q1", "answer": "8:00"}}
    resumed.write({"config": "default", "id": "q2", "answer": "6 euros"}, "answered")  # appends on a clean line
    resumed.close()
    again = Checkpoint.open(tmp_path, description, resume=True)
    again.close()
    assert set(again.rows("default")) == {"q1", "q2"}
    assert again.path == first.path  # the same run finds the same file

    other = Checkpoint.open(tmp_path, {**description, "questions": 3}, resume=True)  # other questions, other file
    other.close()
    assert other.rows("default") == {} and other.path != first.path
    fresh = Checkpoint.open(tmp_path, description, resume=False)  # without --resume: starts afresh
    fresh.close()
    later = Checkpoint.open(tmp_path, description, resume=True)
    later.close()
    assert fresh.rows("default") == {} and later.rows("default") == {}
