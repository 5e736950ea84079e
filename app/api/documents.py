"""Documents: list, upload (-> an ingestion job), delete, open the original file; ingestion jobs.

Uploads are written only under `<data dir>/uploads/<collection>/`, with sanitised names: a name that
tries to climb out (`../x.pdf`, `/etc/x.md`, `..\\x.md`) keeps only its last part, and the final path is
checked to lie inside the uploads folder before anything is written.
"""

from __future__ import annotations

import mimetypes
import re
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import FileResponse

from app.api.access import AUTH_ERRORS
from app.api.deps import PrincipalDep, ServicesDep, TokenDep
from app.api.schemas import DocumentOut, ErrorResponse, JobOut, JobsResponse
from app.auth import Principal, check_collection_name
from app.errors import AuthenticationError, ConsultaError, NotFoundError, PayloadTooLargeError
from retrieval.errors import IndexNotFoundError

router = APIRouter(prefix="/v1")
MAX_NAME = 120
_UNSAFE = re.compile(r"[^\w.\- ()+,]+")


def safe_filename(name: str | None, allowed: list[str]) -> str:
    """A file name that is safe to write in one folder: the last path part, no control characters or
    leading dots, at most 120 characters, with one of the allowed suffixes. ConsultaError otherwise."""
    raw = (name or "").strip()
    base = PureWindowsPath(PurePosixPath(raw.replace("\x00", "")).name).name  # both separators
    base = unicodedata.normalize("NFC", base)
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    base = _UNSAFE.sub("_", base).strip(" .")
    if not base or base in {".", ".."}:
        raise ConsultaError(f"{raw or '(unnamed)'}: the file name is empty or hidden")
    suffix = Path(base).suffix.lower()
    if suffix not in allowed:
        raise ConsultaError(f"{base}: file type '{suffix or '(none)'}' is not accepted (accepted: "
                            f"{', '.join(allowed)})")
    if len(base) > MAX_NAME:
        base = Path(base).stem[:MAX_NAME - len(suffix)] + suffix
    return base


def index_documents(s) -> list[dict[str, Any]]:
    """Every document in the index (unfiltered: callers filter by what the caller may read)."""
    try:
        return s.store.ensure_current().documents()
    except IndexNotFoundError:
        return []


def _readable_document(s, principal: Principal, document_id: str) -> dict[str, Any]:
    for d in index_documents(s):
        if d["document_id"] == document_id and principal.can_read(d["collection"]):
            return d
    raise NotFoundError(f"no document with id {document_id}")


@router.get("/documents", tags=["documents"], responses=AUTH_ERRORS)
def documents(s: ServicesDep, principal: PrincipalDep, collection: str | None = None) -> dict[str, list[DocumentOut]]:
    """The documents of the collections the caller may read."""
    docs = [d for d in index_documents(s) if principal.can_read(d["collection"])
            and (collection is None or d["collection"] == collection)]
    return {"documents": [DocumentOut(document_id=d["document_id"], source=d["source"], title=d["title"],
                                      collection=d["collection"], pages=d["pages"], chunks=d["chunks"])
                          for d in docs]}


@router.post("/documents", response_model=JobOut, status_code=202, tags=["documents"], responses={
    **AUTH_ERRORS, 200: {"model": JobOut, "description": "With wait=true: the finished job"},
    400: {"model": ErrorResponse, "description": "Bad collection name"},
    413: {"model": ErrorResponse, "description": "Every file was over the size limit"}})
def upload(s: ServicesDep, principal: PrincipalDep, response: Response,
           files: Annotated[list[UploadFile], File(description="PDF, Word (.docx), HTML, Markdown or text files")],
           collection: Annotated[str, Form()] = "default",
           wait: Annotated[bool, Query(description="Wait for the ingestion to finish (up to 15 min) and answer "
                                       "with the finished job")] = False) -> JobOut:
    """Upload files into a collection (editors with a write grant, admins): answers 202 with an ingestion
    job at once (poll GET /v1/jobs/{id}); files refused here (type, size, name) are listed as failed."""
    check_collection_name(collection)
    principal.require_write(collection)
    settings = s.settings
    max_bytes = int(settings.api.max_upload_mb * 1024 * 1024)
    root = settings.uploads_dir.resolve()
    upload_dir = (root / collection).resolve()
    if not upload_dir.is_relative_to(root):  # pragma: no cover - the collection name check forbids it
        raise ConsultaError(f"invalid collection name {collection!r}")
    upload_dir.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    rejected: list[dict[str, Any]] = []
    for f in files:
        try:
            name = safe_filename(f.filename, [t.lower() for t in settings.api.upload_types])
        except ConsultaError as e:
            rejected.append({"source": Path(str(f.filename or "upload")).name or "(unnamed)", "status": "failed",
                             "chunks": 0, "pages": None, "error": str(e)})
            continue
        target = (upload_dir / name).resolve()
        if target.parent != upload_dir:  # pragma: no cover - safe_filename leaves one path part
            rejected.append({"source": name, "status": "failed", "chunks": 0, "pages": None,
                             "error": f"{name}: not a plain file name"})
            continue
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=upload_dir)
        size = 0
        with open(fd, "wb") as out:
            while block := f.file.read(1 << 20):
                size += len(block)
                if size > max_bytes:
                    break
                out.write(block)
        if size > max_bytes:
            Path(tmp).unlink(missing_ok=True)
            rejected.append({"source": name, "status": "failed", "chunks": 0, "pages": None,
                             "error": f"{name}: larger than {settings.api.max_upload_mb:g} MB"})
            continue
        Path(tmp).replace(target)
        saved.append(target)
    if not saved and rejected and all("larger than" in r["error"] for r in rejected):
        raise PayloadTooLargeError("; ".join(r["error"] for r in rejected))
    job = s.jobs.submit(collection, saved, user_id=principal.user_id, rejected=rejected)
    s.audit.record("document.upload", user_id=principal.user_id, username=principal.username,
                   collection=collection, target=job["job_id"], files=[p.name for p in saved],
                   rejected=[r["source"] for r in rejected])
    if wait and job["status"] not in ("done", "failed"):
        job = s.jobs.wait(job["job_id"], timeout=900)
    if job["status"] in ("done", "failed"):
        response.status_code = 200
    return JobOut(**job)


@router.get("/jobs", response_model=JobsResponse, tags=["documents"], responses=AUTH_ERRORS)
def jobs(s: ServicesDep, principal: PrincipalDep, limit: int = 50) -> JobsResponse:
    """Ingestion jobs, newest first: the caller's own (admins: everyone's)."""
    return JobsResponse(jobs=[JobOut(**j) for j in s.jobs.list(
        user_id=None if principal.is_admin else principal.user_id, limit=max(1, min(limit, 500)))])


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["documents"], responses={
    **AUTH_ERRORS, 404: {"model": ErrorResponse, "description": "No such job of yours"}})
def job(job_id: str, s: ServicesDep, principal: PrincipalDep) -> JobOut:
    """One ingestion job's status, progress and per-file results."""
    j = s.jobs.get(job_id)
    if not principal.is_admin and j["user"] != principal.username:
        raise NotFoundError(f"no ingestion job {job_id}")
    return JobOut(**j)


@router.delete("/documents/{document_id}", tags=["documents"], responses={
    **AUTH_ERRORS, 404: {"model": ErrorResponse, "description": "No such document (that you may read)"}})
def delete_document(document_id: str, s: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    """Remove a document from the index (and its uploaded file); editors with a write grant, admins."""
    doc = _readable_document(s, principal, document_id)
    principal.require_write(doc["collection"])
    removed = s.pipeline.remove([document_id])
    if not removed:
        raise NotFoundError(f"no document with id {document_id}")
    source = Path(doc["source"])
    if source.resolve().is_relative_to(s.settings.uploads_dir.resolve()):
        source.unlink(missing_ok=True)
    s.audit.record("document.delete", user_id=principal.user_id, username=principal.username,
                   collection=doc["collection"], target=doc["source"], document_id=document_id, chunks=removed)
    return {"deleted": document_id, "chunks_removed": removed}


@router.get("/documents/{document_id}/file", tags=["documents"], response_class=FileResponse, responses={
    **AUTH_ERRORS, 200: {"content": {"application/pdf": {}, "application/octet-stream": {}},
                         "description": "The original file, shown inline (add #page=N to open a PDF at a page)"},
    404: {"model": ErrorResponse, "description": "No such document (that you may read), or its file is gone"}})
def document_file(document_id: str, s: ServicesDep, token: TokenDep, u: int | None = None,
                  exp: int | None = None, sig: str | None = None) -> FileResponse:
    """The original file of a document, for a citation to open in one click: either with the caller's
    credential, or through the signed link in a citation's `url` (no header needed)."""
    if sig is not None and u is not None and exp is not None:
        s.links.verify(document_id, u, exp, sig)
        principal = s.access.principal(u)
    elif token:
        principal = s.access.authenticate(token)
    else:
        raise AuthenticationError("sign in, or open the document through a citation's link")
    doc = _readable_document(s, principal, document_id)
    path = Path(doc["source"])
    if not path.is_file():
        raise NotFoundError(f"the file of document {document_id} is no longer on the server")
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media.startswith("text/") or path.suffix.lower() in (".md", ".markdown"):
        media = "text/plain; charset=utf-8"  # shown as text, never run as HTML in the API's origin
    return FileResponse(path, media_type=media, filename=path.name, content_disposition_type="inline",
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "sandbox; default-src 'none'"})
