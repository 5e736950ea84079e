"""The top-level `consulta` commands: ingest, sync, search, ask, serve, ui, reindex. Each parses its options, calls the
app, and prints: machine output (--json) on stdout, progress and messages on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.cli.common import build_services, err, load_cli_settings, print_json
from app.errors import ConsultaError

if TYPE_CHECKING:
    from ingest.pipeline import FileResult

PathsArg = Annotated[list[Path], typer.Argument(help="Files or folders (PDF, Word, HTML, Markdown, text)")]
CollectionOpt = Annotated[str | None, typer.Option(help="Collection to put them in")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary")]


def ingest(
    paths: PathsArg,
    collection: CollectionOpt = None,
    prune: Annotated[bool, typer.Option("--prune", help="Also remove this collection's documents that are gone "
                                                         "from under the given folders")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read, chunk and index documents. Unchanged files are skipped; changed ones are re-indexed."""
    _ingest(paths, collection, prune=prune, as_json=as_json)


def sync(paths: PathsArg, collection: CollectionOpt = None, as_json: JsonOpt = False) -> None:
    """Bring a collection in line with folders: add new files, re-index changed ones, remove deleted ones."""
    _ingest(paths, collection, prune=True, as_json=as_json)


class IngestRates:
    """Pages/s and chunks/s since the start of an ingestion, for its progress bar.

    Pages count when their file is done; chunks as they are embedded (the current file's too).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._start = clock()
        self.pages = 0
        self.chunks = 0  # of finished files
        self._current = 0  # embedded so far in the file being embedded

    def embedding(self, done: int) -> None:
        self._current = done

    def file_done(self, result: FileResult) -> None:
        self.pages += result.pages or 0
        self.chunks += result.chunks
        self._current = 0

    def __str__(self) -> str:
        seconds = self._clock() - self._start
        if seconds <= 0 or not (self.pages or self.chunks or self._current):
            return ""
        chunks = f"{(self.chunks + self._current) / seconds:.1f} chunks/s"
        return f"{self.pages / seconds:.2f} pages/s, {chunks}" if self.pages else chunks  # pages: once a file is done


def _ingest(paths: list[Path], collection: str | None, *, prune: bool, as_json: bool) -> None:
    services = build_services()
    collection = collection or services.settings.ingest.default_collection
    rates = IngestRates()
    with Progress(TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[rates]}"), console=err, disable=as_json or not err.is_terminal,
                  transient=True) as bar:
        overall = bar.add_task("files", total=None, rates="")
        current = bar.add_task("", total=None, visible=False, rates="")

        def progress(name: str, done: int, total: int) -> None:
            bar.update(overall, completed=done, total=total, description=f"files ({Path(name).name[:36]})"
                       if name else "files", rates=str(rates))

        def file_progress(name: str, done: int, total: int) -> None:
            rates.embedding(done)
            bar.update(current, completed=done, total=total, visible=done < total,
                       description=f"  chunks of {Path(name).name[:32]}")
            bar.update(overall, rates=str(rates))

        def on_file(result: FileResult) -> None:
            rates.file_done(result)
            bar.update(overall, rates=str(rates))

        report = services.pipeline.ingest(paths, collection, progress=progress, prune=prune,
                                          file_progress=file_progress, on_file=on_file)
    if as_json:
        print_json(report.to_dict())
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

    services = build_services()
    try:
        flt = SearchFilter(collections=(collection,) if collection else None,
                           sources=tuple(str(Path(x).resolve()) if Path(x).exists() else x for x in source)
                           if source else None,
                           languages=tuple(language) if language else None,
                           sections=(section,) if section else None,
                           modified_after=timestamp(since), modified_before=timestamp(until, end_of_day=True))
    except ValueError as e:
        raise ConsultaError(f"--since/--until: {e}") from e
    hits = services.retriever.retrieve(query, k, None if flt.empty else flt)
    from app.api.schemas import HitOut

    out: list[dict[str, Any]] = [HitOut.from_hit(h).model_dump() for h in hits]  # as POST /v1/search
    if as_json:
        print_json({"hits": out})
        return
    if not out:
        err.print("no matching passages")
    for i, h in enumerate(out, 1):
        where = Path(h["source"]).name + (f" p.{h['page']}" if h["page"] else "")
        cosine = f" (cosine {h['dense_score']:.3f})" if h["dense_score"] is not None else ""
        err.print(f"[bold]{i}. {where}[/bold]  score {h['score']:.3f}{cosine}"
                  + (f"  § {h['section']}" if h["section"] else ""))
        sys.stdout.write("   " + " ".join(h["text"].split())[:300] + "\n")


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
    services = build_services()
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
        print_json(response.model_dump())
        return
    sys.stdout.write("\n")
    shown = response.sources if response.refused else response.citations
    if shown:
        err.print("\n[bold]" + ("Closest passages:" if response.refused else "Sources:") + "[/bold]")
    for c in shown:
        where = Path(c.source).name + (f", page {c.page}" if c.page else "") + (f", {c.section}" if c.section else "")
        err.print(f"  [{c.n}] {where}")


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
) -> None:
    """Start the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from app.api.middleware import configure_logging
    from app.api.server import create_app
    from app.auth import ensure_first_admin

    settings = load_cli_settings()
    configure_logging(settings.api.log_format)
    services = build_services(settings)
    first = ensure_first_admin(services.access, services.audit)
    if first:  # a fresh install: the one time this password is shown
        err.print(f"[bold]First run: created the admin '{first[0]}' with the password {first[1]}[/bold]\n"
                  "Sign in to the UI with it and change it (consulta users reset-password admin); it is not "
                  "shown again.")
    app = create_app(services)
    uvicorn.run(app, host=host or settings.api.host, port=port or settings.api.port, log_config=None,
                access_log=False)


def ui(port: Annotated[int | None, typer.Option(help="Port")] = None) -> None:
    """Start the Streamlit chat; it talks to the API at CONSULTA_API_URL."""
    settings = load_cli_settings()
    app_path = Path(__file__).resolve().parents[2] / "ui" / "app.py"  # a path, not an import: app/ never imports ui/
    env = {**os.environ, "CONSULTA_API_URL": settings.ui.api_url}
    if settings.ui.public_api_url:
        env["CONSULTA_PUBLIC_API_URL"] = settings.ui.public_api_url
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_path), "--server.headless", "true",
           "--server.port", str(port or settings.ui.port), "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal", "--server.maxUploadSize", str(max(1, int(settings.api.max_upload_mb)))]
    raise typer.Exit(subprocess.call(cmd, env=env))


def reindex(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Rebuild the whole index from the source files with the current embedder and chunker settings."""
    from retrieval.store import IndexIdentity

    services = build_services()
    store = services.store.load()
    by_collection: dict[str, list[str | Path]] = {}
    missing: list[str | Path] = []
    for d in store.documents():
        (by_collection.setdefault(d["collection"], []) if Path(d["source"]).exists() else missing).append(d["source"])
    ident = IndexIdentity(services.embedder.model_id, services.embedder.dim, services.chunker.settings_id)
    reports = [r.to_dict() for r in services.pipeline.ingest_groups(by_collection, replace=True)]
    result = {"collections": reports, "missing_sources": missing, "embedder": ident.embedder}
    if as_json:
        print_json(result)
    else:
        err.print(f"reindexed {sum(len(s) for s in by_collection.values())} documents with {ident.embedder}"
                  + (f"; {len(missing)} sources no longer exist and were dropped" if missing else ""))


COMMANDS = (ingest, sync, search, ask, serve, ui, reindex)  # in the order `consulta --help` lists them
