"""`consulta reranker ...`: fine-tune the cross-encoder re-ranker on your own documents, and inspect it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import JsonOpt, build_services, err, load_cli_settings

reranker_cli = typer.Typer(help="The cross-encoder re-ranker, fine-tuned on your own documents.",
                           no_args_is_help=True)


def _describe(report: dict) -> str:
    before, after = report.get("first_stage", {}), report.get("reranked", {})
    lines = [f"re-ranker: {report.get('path')}",
             f"  {report.get('questions_written')} questions written, {report.get('questions_kept')} kept for "
             f"training ({report.get('pairs')} pairs), {report.get('held_out')} held out",
             f"  held-out questions, first stage -> re-ranked: hit@1 {before.get('hit@1')} -> {after.get('hit@1')}, "
             f"nDCG@10 {before.get('ndcg@10')} -> {after.get('ndcg@10')} (first-stage weight {report.get('blend')})"]
    if after.get("ndcg@10") is not None and before.get("ndcg@10") is not None:
        if report.get("recommended"):
            lines.append("  it ranks the held-out questions' passages better: switch it on with "
                         "CONSULTA_RETRIEVAL__RERANKER=cross-encoder")
        else:
            lines.append("  it does not beat the first stage on the held-out questions: keep "
                         "CONSULTA_RETRIEVAL__RERANKER=none (or try more --questions)")
    return "\n".join(lines)


@reranker_cli.command("train")
def train(
    collection: Annotated[str | None, typer.Option(help="Train on this collection's passages only")] = None,
    questions: Annotated[int, typer.Option(help="Questions the serving model writes (one per sampled passage)",
                                           min=8, max=20_000)] = 300,
    epochs: Annotated[int, typer.Option(help="Passes over the training pairs", min=1, max=20)] = 3,
    out: Annotated[Path | None, typer.Option(help="Where to save the model (default: <data_dir>/reranker)")] = None,
    base: Annotated[Path | None, typer.Option(help="Base transformers folder to fine-tune (default: "
                                              "multilingual-e5-small, the e5 embedder's model)")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a cross-encoder on questions the local model writes about your passages (InPars-style)."""
    from app.reranking import train_from_index

    last: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if done == total or done - last.get(stage, 0) >= max(1, total // 10):
            last[stage] = done
            err.print(f"{stage}: {done}/{total}")

    report = train_from_index(build_services(), collection=collection, questions=questions, epochs=epochs, out=out,
                              base=base, seed=seed, progress=progress)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(_describe(report.to_dict()) + "\n")


@reranker_cli.command("show")
def show(path: Annotated[Path | None, typer.Argument(help="Model folder (default: the configured one)")] = None,
         as_json: JsonOpt = False) -> None:
    """What a trained re-ranker was trained on, and how it ranked its held-out questions."""
    from app.errors import ConsultaError
    from retrieval.reranker import read_manifest

    settings = load_cli_settings()
    folder = path or settings.retrieval.reranker_path or settings.reranker_dir
    info = read_manifest(folder)
    if info is None:
        raise ConsultaError(f"no trained re-ranker in {folder} (run `consulta reranker train`)")
    info = {k: v for k, v in info.items() if k != "questions"}
    if as_json:
        sys.stdout.write(json.dumps(info, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(_describe(info) + f"\n  trained {info.get('trained_at')} from {info.get('base')}\n")
