"""`consulta docs ...`: list and remove ingested documents."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from app.cli.common import build_services, err, print_json

docs_cli = typer.Typer(help="List and remove ingested documents.", no_args_is_help=True)


@docs_cli.command("list")
def docs_list(
    collection: Annotated[str | None, typer.Option(help="Only this collection")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List ingested documents."""
    services = build_services()
    docs = services.store.load().documents()
    if collection:
        docs = [d for d in docs if d["collection"] == collection]
    if as_json:
        print_json({"documents": docs})
        return
    for d in docs:
        sys.stdout.write(f"{d['collection']}\t{d['chunks']} chunks\t{d['source']}\n")
    if not docs:
        err.print("no documents")


@docs_cli.command("remove")
def docs_remove(
    sources: Annotated[list[str], typer.Argument(help="Source paths (as listed) or document ids")],
    collection: Annotated[str | None, typer.Option(help="Only in this collection")] = None,
) -> None:
    """Remove documents from the index."""
    services = build_services()
    services.store.load()
    removed = services.pipeline.remove(sources, collection)
    if not removed:
        err.print("no such document in the index (see `consulta docs list`)")
        raise typer.Exit(1)
    err.print(f"removed {removed} chunks")
