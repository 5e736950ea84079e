"""`consulta eval run` end to end through the CLI: real index, real engine, real judge, real reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

CONTRACT = ("retrieval.ndcg@10", "retrieval.mrr@10", "retrieval.recall@10", "answer.em", "answer.f1",
            "refusal.unanswerable_rate", "refusal.false_rate", "faithfulness")


@pytest.fixture(scope="module")
def judged_run(tiny_squad: Path, eval_env: dict[str, str], tmp_path_factory) -> dict:
    """Qwen 0.5B answers and judges the tiny set; the EM gate cannot pass, so the exit status is 1."""
    env = {**eval_env, "CONSULTA_SERVING__MODEL": "qwen2.5-coder-0.5b"}
    report = tmp_path_factory.mktemp("report-a")
    r = run_cli(["eval", "run", "--dataset", str(tiny_squad), "--limit", "4", "--json", "--report", str(report),
                 "--calibration-set", str(tiny_squad), "--calibration-n", "2",
                 "--fail-under", "answer.em=1.01", "--fail-under", "retrieval.recall@10=0.5"], env)
    return {"proc": r, "report": report}


def test_json_has_the_contract_keys_and_the_gate_fails(judged_run):
    r = judged_run["proc"]
    assert r.returncode == 1, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["n"] == 4
    assert set(CONTRACT) <= set(out["metrics"]), sorted(out["metrics"])
    # passages have no pages: a metric the dataset cannot support is absent, not zero
    assert "citation.page_accuracy" not in out["metrics"]
    assert out["metrics"]["retrieval.recall@10"] == 1.0  # three passages: the gold one is always in the top 10
    assert all(0.0 <= out["metrics"][k] <= 1.0 for k in CONTRACT)
    assert out["gates_failed"] == [f"default: answer.em = {out['metrics']['answer.em']:.4f} < 1.01"]
    assert "gate failed" in r.stderr
    assert Path(out["report"]) == judged_run["report"] / "report.html"
    cal = out["calibration"]
    assert cal["cases"] == 6 and cal["judge"].lower().startswith("qwen2.5-coder-0.5b")


def test_reports_are_written_with_judge_reasons(judged_run):
    folder = judged_run["report"]
    summary = json.loads((folder / "summary.json").read_text())
    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["id"] for r in rows} == {"q1", "q2", "q3", "q4"}
    judged = [r for r in rows if r.get("judge")]
    assert judged and all(r["judge"]["reason"] for r in judged)
    md = (folder / "summary.md").read_text()
    assert "| answer.f1 |" in md and "agrees with the references" in md
    assert summary["configs"][0]["metrics"] == json.loads(judged_run["proc"].stdout)["metrics"]


def test_a_later_run_compares_with_the_earlier_one(judged_run, tiny_squad, eval_env):
    r = run_cli(["eval", "run", "--dataset", str(tiny_squad), "--limit", "4", "--json", "--no-judge"], eval_env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    # default place: <data_dir>/reports/<timestamp>/report.html
    assert re.fullmatch(re.escape(eval_env["CONSULTA_DATA_DIR"]) + r"/reports/\d{8}T\d{6}Z/report\.html",
                        out["report"])
    assert "faithfulness" not in out["metrics"]
    summary = json.loads((Path(out["report"]).parent / "summary.json").read_text())
    assert summary["previous"]["default"]["report"] == str(judged_run["report"] / "report.html")
    assert "previous run" in Path(out["report"]).read_text()


def test_configs_compare_on_a_retrieval_set_and_the_gate_passes(tiny_beir, eval_env, tmp_path):
    (tmp_path / "dense.yaml").write_text("retrieval:\n  mode: dense\n")
    (tmp_path / "bm25.yaml").write_text("retrieval:\n  mode: bm25\n")
    r = run_cli(["eval", "run", "--dataset", str(tiny_beir), "--config", str(tmp_path / "dense.yaml"),
                 "--config", str(tmp_path / "bm25.yaml"), "--json", "--fail-under", "retrieval.ndcg@10=0.5"],
                eval_env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["n"] == 3 and set(out["configs"]) == {"dense", "bm25"}
    for metrics in out["configs"].values():
        assert metrics["retrieval.mrr@10"] > 0.5
        assert not any(k.startswith(("answer.", "refusal.")) for k in metrics)


def test_bad_input_is_one_line_and_exit_1(eval_env, tmp_path):
    r = run_cli(["eval", "run", "--dataset", str(tmp_path)], eval_env)
    assert r.returncode == 1 and "not a dataset we read" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["eval", "run", "--dataset", str(tmp_path), "--fail-under", "f1"], eval_env)
    assert r.returncode == 1 and "METRIC=VALUE" in r.stderr


def test_html_report_opens_with_plots_and_filters_failures(judged_run, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto((judged_run["report"] / "report.html").as_uri())
    plots = page.locator("svg.plot")
    assert plots.count() == 2
    for i in range(2):
        box = plots.nth(i).bounding_box()
        assert plots.nth(i).is_visible() and box["width"] > 300 and box["height"] > 100
    assert page.locator("svg.plot rect").count() > 5  # bars and boxes drawn
    assert "agrees with the references" in page.locator("#calibration").inner_text()
    rows = page.locator("#rows tbody tr")
    assert rows.count() == 4
    failing = page.locator('#rows tbody tr[data-fail="1"]').count()
    page.locator("#failures").check()
    assert page.locator("#rows tbody tr:visible").count() == failing
    assert page.locator("#shown").inner_text() == str(failing)
    page.locator("#failures").uncheck()
    page.locator("#search").fill("within how many days")
    assert page.locator("#rows tbody tr:visible").count() == 1
    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"  # ignored by git, as the UI tests' shots
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "eval-report.png"), full_page=True)
    page.close()


def test_generate_writes_a_reviewable_golden_set_that_eval_run_reads(eval_env, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "handbook.md").write_text(
        "# Staff handbook\n\nThe office opens at 8:00 and closes at 18:00 from Monday to Friday. Staff may work "
        "from home two days per week after agreeing it with their manager. Travel expenses are reimbursed within "
        "30 days when the receipt is uploaded to the finance portal, and meals abroad are covered up to 45 euros "
        "per day.\n", encoding="utf-8")
    env = {**eval_env, "CONSULTA_DATA_DIR": str(tmp_path / "data"), "CONSULTA_SERVING__MODEL": "qwen2.5-coder-0.5b",
           "CONSULTA_SERVING__MAX_SEQUENCES": "1"}
    (tmp_path / "data" / "models").mkdir(parents=True)
    models = Path(eval_env["CONSULTA_DATA_DIR"]) / "models"  # the 0.5B assembled by the judged run
    for f in models.glob("qwen2.5-coder-0.5b*"):
        (tmp_path / "data" / "models" / f.name).symlink_to(f)
    assert run_cli(["ingest", str(docs), "--collection", "hr"], env).returncode == 0
    out = tmp_path / "golden.jsonl"
    r = run_cli(["eval", "generate", "--out", str(out), "--n", "1", "--collection", "hr", "--json"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["asked"] == 1 and summary["written"] == 1
    row = json.loads(out.read_text().splitlines()[0])
    assert row["question"].strip() and row["answers"][0].strip() and row["reviewed"] is False
    assert row["source"].endswith("handbook.md") and "8:00" in row["context"]
    r = run_cli(["eval", "run", "--dataset", str(out), "--documents", str(docs), "--no-judge", "--json"],
                {**env, "CONSULTA_SERVING__MODEL": "smollm2-135m"})
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads(r.stdout)["metrics"]
    assert metrics["retrieval.recall@10"] == 1.0 and "answer.f1" in metrics


def test_a_question_too_long_for_the_context_does_not_lose_the_run(eval_env, tmp_path, tiny_squad):
    """One prompt that cannot fit the per-request context (1,024 tokens here) is that question's failure:
    the run finishes, judges the others and says which question failed and why."""
    from tests.eval.conftest import QUESTIONS, write_squad_set

    long_question = "The office opens at 8:00 and closes at 18:00 from Monday to Friday; " * 120 + \
        "at what time does the office open?"  # on topic, so it is answered rather than refused
    dataset = write_squad_set(tmp_path / "set", [*QUESTIONS[:2], ("long", long_question, ["8:00"], False,
                                                                  "Office#0")])
    env = {**eval_env, "CONSULTA_DATA_DIR": str(tmp_path / "data"), "CONSULTA_SERVING__N_CTX": "2048"}
    report = tmp_path / "report"
    r = run_cli(["eval", "run", "--dataset", str(dataset), "--json", "--report", str(report),
                 "--calibration-set", str(tiny_squad), "--calibration-n", "1"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    rows = {row["id"]: row for row in map(json.loads, (report / "rows.jsonl").read_text().splitlines())}
    assert set(rows) == {"q1", "q2", "long"} and out["n"] == 3
    assert all("error" not in rows[q] and "answer" in rows[q] for q in ("q1", "q2"))
    assert all(rows[q].get("judge") for q in ("q1", "q2") if not rows[q]["refused"])
    assert "answer.f1" in out["metrics"] and out["calibration"]["cases"] == 3
    if "error" in rows["long"]:  # the assistant could not fit it: reported, left out of the metrics
        assert "tokens" in rows["long"]["error"] and rows["long"]["failed_stage"] == "answering"
        assert out["failed"] == 1 and out["configs_failed"] == {"default": 1}
        assert "1 of 3 questions failed" in r.stderr
        assert "failed while answering" in (report / "report.html").read_text()
    else:  # the assistant fitted it
        assert out["failed"] == 0 and "answer" in rows["long"]
