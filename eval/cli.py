"""`consulta eval`: run evaluations and write golden sets. Imports stay light; the work is imported per command."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err = Console(stderr=True, highlight=False)
eval_cli = typer.Typer(help="Evaluate retrieval and answers on a dataset; write golden sets.", no_args_is_help=True)


def _progress_bar(disable: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err, disable=disable, transient=False)


@eval_cli.command("run")
def run(
    dataset: Annotated[Path, typer.Option(help="Dataset folder (BEIR, SQuAD-style, FinanceBench) or golden .jsonl; "
                                               "the format is detected")],
    documents: Annotated[Path | None, typer.Option(help="Documents folder for a golden set (or FinanceBench PDFs)")]
    = None,
    config: Annotated[list[Path] | None, typer.Option("--config", help="YAML settings to compare (repeatable); "
                                                                       "each is laid over the current settings")]
    = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate a seeded sample of N questions", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample and of the distractors")] = 0,
    report: Annotated[Path | None, typer.Option(help="Report folder (default <data_dir>/reports/<timestamp>)")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout")] = False,
    fail_under: Annotated[list[str] | None, typer.Option("--fail-under", help="METRIC=VALUE: exit 1 when a "
                                                                              "config scores below (repeatable)")]
    = None,
    k: Annotated[int, typer.Option(help="Cut-off of the retrieval metrics", min=1, max=100)] = 10,
    judge: Annotated[bool, typer.Option("--judge/--no-judge", help="Judge the RAG triad with the local LLM")] = True,
    noise: Annotated[int, typer.Option(help="Also answer with N distractor passages added (noise robustness)",
                                       min=0, max=10)] = 0,
    concurrency: Annotated[int | None, typer.Option(help="Questions in flight (default: serving.max_sequences)",
                                                    min=1)] = None,
    calibration_set: Annotated[Path | None, typer.Option(help="SQuAD 2.0-format folder to calibrate the judge on "
                                                              "(default: squad2-en-half when found)")] = None,
    calibration_n: Annotated[int, typer.Option(help="Questions for the judge calibration (3 cases each)",
                                               min=1)] = 16,
    resume: Annotated[bool, typer.Option("--resume", help="Pick up a killed run with the same dataset, questions "
                                                          "and settings: reuse its finished rows, ask the rest")]
    = False,
) -> None:
    """Evaluate the assistant on a dataset and write an HTML report plus JSON and Markdown summaries."""
    from app.cli.common import load_cli_settings
    from eval.evaluate import EvalOptions, check_gates, evaluate, parse_gates

    gates = parse_gates(fail_under or [])
    options = EvalOptions(dataset=dataset, documents=documents, configs=list(config or []), limit=limit, seed=seed,
                          report=report, k=k, judge=judge, noise=noise, concurrency=concurrency,
                          calibration_set=calibration_set, calibration_n=calibration_n, resume=resume,
                          command="consulta eval " + " ".join(shlex.quote(a) for a in sys.argv[2:]))
    with _progress_bar(disable=not err.is_terminal) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)
            if not err.is_terminal and total and (done == total or done % max(1, total // 10) == 0):
                err.print(f"{phase}: {done}/{total}")  # a log line instead of the bar, ~every 10%

        result = evaluate(load_cli_settings(), options, progress)
    failures = check_gates(result, gates)
    first = result["configs"][0]
    if as_json:
        out = {"n": result["n"], "metrics": first["metrics"], "report": result["report"],
               "configs": {c["name"]: c["metrics"] for c in result["configs"]},
               "calibration": result["calibration"], "dataset": result["dataset"], "gates_failed": failures,
               "failed": result["failed"], "configs_failed": {c["name"]: c["failed"] for c in result["configs"]},
               "checkpoint": result["checkpoint"]}
        sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
    else:
        _print_table(result)
    from eval.report import failures_line

    if failures_line(result):
        err.print(f"[yellow]{failures_line(result)}[/yellow]")
    if result["checkpoint"]["reused"]:
        err.print(f"resumed: {result['checkpoint']['reused']} finished questions taken from "
                  f"{result['checkpoint']['path']}")
    for f in failures:
        err.print(f"[red]gate failed[/red] {f}")
    if failures:
        raise typer.Exit(1)


def _print_table(result: dict) -> None:
    from rich.table import Table

    from eval.report import calibration_line, metric_names

    table = Table(title=f"{result['dataset']['name']}: {result['n']} questions")
    table.add_column("metric")
    for c in result["configs"]:
        table.add_column(c["name"], justify="right")
    for m in metric_names(result):
        table.add_row(m, *(f"{c['metrics'][m]:.3f}" if m in c["metrics"] else "–" for c in result["configs"]))
    Console().print(table)
    err.print(calibration_line(result.get("calibration")))
    err.print(f"report: {result['report']}")


@eval_cli.command("generate")
def generate(
    out: Annotated[Path, typer.Option(help="JSONL file to write (golden format, reviewed=false)")],
    collection: Annotated[str | None, typer.Option(help="Only this collection's documents")] = None,
    n: Annotated[int, typer.Option(help="Questions to write", min=1)] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the chunk sample")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary")] = False,
) -> None:
    """Write a golden set from the indexed documents with the local LLM, for people to review and edit."""
    from app.cli.common import build_services
    from eval.generate import generate_golden

    services = build_services()
    try:
        with _progress_bar(disable=not err.is_terminal) as bar:
            task = bar.add_task("writing questions", total=n)
            summary = generate_golden(services, out, n=n, seed=seed, collection=collection,
                                      progress=lambda d, t: bar.update(task, completed=d, total=t))
    finally:
        services.close()
    if as_json:
        sys.stdout.write(json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    else:
        err.print(f"wrote {summary['written']} questions to {summary['path']} ({summary['answer_in_source']} with "
                  f"the answer found word for word in its passage); review them, then: consulta eval run "
                  f"--dataset {summary['path']} --documents DIR")
