"""One evaluation run end to end: dataset -> configs -> answers -> judge -> metrics -> reports -> gate.

Each finished row goes to a checkpoint as it finishes (eval/checkpoint.py); `resume` reuses what a killed run
left there. Questions that failed are counted per config ("failed") and left out of the metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.container import Services
from app.errors import ConsultaError
from app.settings import Settings
from eval.checkpoint import Checkpoint, describe
from eval.datasets import Dataset, load_dataset
from eval.judge import TriadJudge, calibrate
from eval.report import append_history, previous_runs, write_reports
from eval.runner import EvalRunner, Progress, RunConfig, aggregate, failed, load_configs

CALIBRATION_ENV = "CONSULTA_EVAL_CALIBRATION_SET"


@dataclass(slots=True)
class EvalOptions:
    dataset: Path
    documents: Path | None = None
    configs: list[Path] = field(default_factory=list)
    limit: int | None = None
    seed: int = 0
    report: Path | None = None
    k: int = 10
    judge: bool = True
    noise: int = 0
    concurrency: int | None = None
    calibration_set: Path | None = None
    calibration_n: int = 16
    command: str = "consulta eval run"
    resume: bool = False  # reuse the rows a killed run with the same key left in its checkpoint


def find_calibration_set(options: EvalOptions, dataset: Dataset) -> Path | None:
    """squad2-en-half (SQuAD 2.0 format): --calibration-set, $CONSULTA_EVAL_CALIBRATION_SET, the dataset
    itself when it is that set, or ../shared/data/qa/squad2-en-half beside the working copy."""
    candidates = [options.calibration_set, Path(os.environ[CALIBRATION_ENV]) if os.environ.get(CALIBRATION_ENV)
                  else None]
    if dataset.format == "squad" and dataset.path.name.startswith("squad2"):
        candidates.append(dataset.path)
    repo = Path(__file__).resolve().parent.parent
    candidates += [repo.parent / "shared" / "data" / "qa" / "squad2-en-half",
                   Path.cwd().parent / "shared" / "data" / "qa" / "squad2-en-half"]
    for c in candidates:
        if c is not None and (c / "qa.jsonl").is_file() and (c / "passages.jsonl").is_file():
            return c
    return None


def _settings_summary(s: Settings) -> dict[str, Any]:
    return {"model": s.serving.model, "embedder": s.retrieval.embedder, "mode": s.retrieval.mode,
            "reranker": s.retrieval.reranker, "k": s.retrieval.k, "chunk_size": s.ingest.chunk_size,
            "chunk_overlap": s.ingest.chunk_overlap, "max_sequences": s.serving.max_sequences}


def parse_gates(gates: list[str]) -> list[tuple[str, float]]:
    out = []
    for g in gates:
        name, sep, value = g.partition("=")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            sep = ""
        if not sep:
            raise ConsultaError(f"--fail-under wants METRIC=VALUE, e.g. answer.f1=0.5 (got {g!r})")
    return out


def check_gates(run: dict[str, Any], gates: list[tuple[str, float]]) -> list[str]:
    """The failed gates, as messages; a gate on a metric the run does not have fails too."""
    failures = []
    for name, floor in gates:
        for c in run["configs"]:
            v = c["metrics"].get(name)
            if v is None:
                failures.append(f"{c['name']}: {name} is not measured on this dataset")
            elif v < floor:
                failures.append(f"{c['name']}: {name} = {v:.4f} < {floor}")
    return failures


def evaluate(base: Settings, options: EvalOptions, progress: Progress | None = None) -> dict[str, Any]:
    dataset = load_dataset(options.dataset, limit=options.limit, seed=options.seed, documents=options.documents)
    configs: list[RunConfig] = load_configs(options.configs, base)
    root = base.data_dir / "eval"
    checkpoint = Checkpoint.open(root / "checkpoints",
                                 describe(dataset.path, options.documents, [i.id for i in dataset.items], configs,
                                          k=options.k, noise=options.noise, seed=options.seed),
                                 resume=options.resume)
    try:
        runner = EvalRunner(base, k=options.k, concurrency=options.concurrency, noise=options.noise,
                            seed=options.seed, progress=progress, checkpoint=checkpoint)
        results = [runner.run_config(dataset, c) for c in configs]
        rows = [r for res in results for r in res.rows]
        calibration = _judge(runner, configs[0].settings, rows, dataset, options, progress) \
            if options.judge and dataset.generative else None
    finally:
        checkpoint.close()

    timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    reports_root = base.data_dir / "reports"
    run_key = hashlib.sha256(f"{dataset.path}|{options.documents}|{options.limit}|{options.seed}|{options.k}|"
                             f"{options.noise}".encode()).hexdigest()[:16]
    run: dict[str, Any] = {
        "timestamp": timestamp, "run_key": run_key, "command": options.command, "n": len(dataset.items),
        "dataset": {"name": dataset.name, "format": dataset.format, "path": str(dataset.path), "unit": dataset.unit,
                    "limit": options.limit, "seed": options.seed},
        "k": options.k, "calibration": calibration,
        "configs": [{"name": res.config.name, "file": res.config.file,
                     "settings": _settings_summary(res.config.settings),
                     "metrics": aggregate(res.rows, dataset, options.k, res.wall_s, res.asked),
                     "wall_s": round(res.wall_s, 1), "index": res.index,
                     "failed": sum(map(failed, res.rows)), "asked": res.asked} for res in results],
        "failed": sum(map(failed, rows)),
        "checkpoint": {"path": str(checkpoint.path), "resumed": checkpoint.resumed, "reused": checkpoint.reused},
    }
    history = reports_root / "history.jsonl"
    run["previous"] = previous_runs(history, run_key, [c["name"] for c in run["configs"]])
    folder = options.report or reports_root / timestamp
    write_reports(run, rows, folder)
    append_history(history, run)
    latest = {"timestamp": timestamp, "report": run["report"], "summary": str(Path(folder) / "summary.json"),
              "dataset": dataset.name}
    (reports_root / "latest.json").write_text(json.dumps(latest, indent=1), encoding="utf-8")
    return run


def _judge(runner: EvalRunner, settings: Settings, rows: list[dict[str, Any]], dataset: Dataset,
           options: EvalOptions, progress: Progress | None) -> dict[str, Any]:
    """Judges the rows (each fitted to the per-request context) and calibrates the judge; returns the calibration."""
    services = Services(runner.eval_settings(RunConfig("judge", settings), runner.root / "judge", True))
    try:
        judge = TriadJudge(services.generator, context_tokens=settings.serving.n_ctx // settings.serving.max_sequences)
        workers = options.concurrency or settings.serving.max_sequences
        runner.judge_rows(rows, judge, workers)
        cal_set = find_calibration_set(options, dataset)
        if cal_set is None:
            return {"error": f"no SQuAD 2.0 calibration set found (pass --calibration-set DIR or set "
                             f"{CALIBRATION_ENV})", "judge": judge.model_id}
        try:
            return calibrate(judge, cal_set, runner.root, n=options.calibration_n, concurrency=workers,
                             progress=(lambda d, t: progress("calibrating judge", d, t)) if progress else None)
        except Exception as e:  # noqa: BLE001 - the answers and verdicts are worth more than the calibration
            return {"error": f"calibration on {cal_set} failed: {type(e).__name__}: {e}", "judge": judge.model_id}
    finally:
        services.close()
