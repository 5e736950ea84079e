"""The Documents page (editors and admins): upload files into a collection, follow the ingestion
job, and list or delete what the index holds."""

from __future__ import annotations

from pathlib import PurePath

import streamlit as st

from app.api.schemas import JobOut
from ui.client import ApiError, UploadFile
from ui.context import PageContext
from ui.markup import plain
from ui.sidebar import render_unreachable

ACCEPTED_TYPES = ["pdf", "docx", "html", "htm", "md", "markdown", "txt"]  # what ingest/loaders.py reads
DEFAULT_COLLECTION = "default"
POLL_S = 1.0

# Session-state keys of this page
_UPLOADER_NONCE = "upload_nonce"  # bumped to empty the uploader after an upload
_JOB = "upload_job"  # the last ingestion job (JobOut), or the ApiError its upload met

_STATUS_ICON = {
    "ingested": ":green[:material/check_circle:]",
    "unchanged": ":blue[:material/published_with_changes:]",
    "failed": ":red[:material/error:]",
}


def render_documents(ctx: PageContext) -> None:
    tr = ctx.t
    st.title(tr("docs.title"))
    if not ctx.status.reachable:
        render_unreachable(ctx)
        return
    if not ctx.can_write:
        st.warning(tr("docs.not_allowed"), icon=":material/lock:")
        return
    _render_upload(ctx)
    _render_listing(ctx)


def _target_collections(ctx: PageContext) -> tuple[list[str], bool]:
    """The collections this person may upload into, and whether they may start a new one."""
    names = [c.name for c in ctx.status.collections]
    writable = ctx.me.writable if ctx.me is not None else []
    if ctx.is_admin or writable is None or "*" in writable:
        return names, True
    return sorted(set(writable)), False


def _render_upload(ctx: PageContext) -> None:
    tr = ctx.t
    names, may_create = _target_collections(ctx)
    preferred = ctx.collection if ctx.collection in names else None
    default = preferred or (names[0] if names else DEFAULT_COLLECTION)
    options = names if default in names or not may_create else [default, *names]
    nonce = st.session_state.setdefault(_UPLOADER_NONCE, 0)

    with st.container(border=True, key="upload"):
        st.subheader(tr("docs.upload_header"))
        collection = st.selectbox(
            tr("docs.upload_collection"),
            options=options,
            index=options.index(default) if default in options else None,
            accept_new_options=may_create,
            help=tr("docs.upload_collection_help") if may_create else None,
            key="upload_collection",
        )
        files = (
            st.file_uploader(
                tr("docs.upload_files"),
                type=ACCEPTED_TYPES,
                accept_multiple_files=True,
                key=f"upload_files_{nonce}",
            )
            or []
        )
        clicked = st.button(
            tr("docs.upload_button", count=len(files)) if files else tr("docs.upload_button_idle"),
            type="primary",
            icon=":material/upload:",
            disabled=not files or not collection,
            key="upload_button",
        )
        if clicked and files and collection:
            payload = [UploadFile(f.name, f.getvalue(), f.type or "application/octet-stream") for f in files]
            with st.spinner(tr("docs.uploading", count=len(payload))):
                try:
                    st.session_state[_JOB] = ctx.client.upload(payload, collection=collection.strip())
                except ApiError as exc:
                    st.session_state[_JOB] = exc
            st.session_state[_UPLOADER_NONCE] = nonce + 1
            st.rerun()
        job = st.session_state.get(_JOB)
        if isinstance(job, ApiError):
            with st.container(key="upload-result"):
                st.error(tr("docs.upload_failed", message=job.message), icon=":material/error:")
        elif isinstance(job, JobOut) and job.status in ("queued", "running"):
            _follow_job(ctx)
        elif isinstance(job, JobOut):
            with st.container(key="upload-result"):
                _render_job_files(ctx, job)


@st.fragment(run_every=POLL_S)
def _follow_job(ctx: PageContext) -> None:
    """The last upload's ingestion job, polled every second until it ends; then the whole page refreshes."""
    tr = ctx.t
    job: JobOut = st.session_state[_JOB]
    try:
        job = st.session_state[_JOB] = ctx.client.job(job.job_id)
    except ApiError as exc:
        st.caption(f":orange[{plain(exc.message)}]")
        return
    if job.status not in ("queued", "running"):
        st.rerun(scope="app")  # the result, the listing, the collections and the status change with it
    with st.container(key="upload-job"):
        done, total = job.progress.done, max(job.progress.total, 1)
        st.progress(done / total, text=tr(f"docs.job.{job.status}", done=done, total=job.progress.total))
        _render_job_files(ctx, job)


def _render_job_files(ctx: PageContext, job: JobOut) -> None:
    tr = ctx.t
    lines = []
    for f in job.files:
        status = tr(f"docs.status.{f.status}") if f.status in _STATUS_ICON else f.status
        detail = [tr("docs.result_detail", count=f.chunks)] if f.status != "failed" else []
        if f.pages:
            detail.append(tr("docs.result_pages", count=f.pages))
        if f.error:
            detail.append(f.error)
        icon = _STATUS_ICON.get(f.status, ":material/hourglass_top:")
        extra = "".join(f" · {plain(d)}" for d in detail)
        lines.append(f"{icon} **{plain(PurePath(f.source).name)}** — {status}{extra}")
    if lines:
        st.markdown("  \n".join(lines))
    if job.status == "done":
        st.caption(tr("docs.upload_summary", count=job.chunks_added, collection=plain(job.collection),
                      total=job.total_chunks))
    elif job.status == "failed":
        st.error(tr("docs.upload_failed", message=job.error or "?"), icon=":material/error:")


def _render_listing(ctx: PageContext) -> None:
    tr = ctx.t
    st.subheader(tr("docs.list_header"))
    st.caption(tr("docs.list_one", name=ctx.collection) if ctx.collection else tr("docs.list_all"))
    try:
        documents = ctx.client.documents(ctx.collection)
    except ApiError as exc:
        st.error(tr("error.generic", message=exc.message), icon=":material/error:")
        return
    with st.container(key="documents"):
        if not documents:
            st.info(tr("docs.empty"), icon=":material/folder_open:")
            return
        widths = [4, 2, 1, 1, 1]
        header = st.columns(widths, vertical_alignment="bottom")
        for col, name in zip(header, ("title", "collection", "pages", "chunks", "actions"), strict=True):
            col.caption(f"**{tr(f'docs.col.{name}')}**")
        for d in sorted(documents, key=lambda d: (d.collection, d.source)):
            name = PurePath(d.source).name  # the server's full path means little to staff
            title = d.title or PurePath(d.source).stem
            row = st.columns(widths, vertical_alignment="center")
            with row[0], st.container(key=f"doc-{d.document_id}"):
                st.markdown(f"**{plain(title)}**  \n:gray[{plain(name)}]")
            row[1].markdown(plain(d.collection))
            row[2].markdown("" if d.pages is None else str(d.pages))
            row[3].markdown(str(d.chunks))
            if ctx.may_write(d.collection):
                with row[4].popover("", icon=":material/delete:", type="tertiary", help=tr("docs.delete"),
                                    key=f"delete-{d.document_id}"):
                    st.markdown(tr("docs.delete_confirm", name=plain(name)))
                    if st.button(tr("docs.delete"), type="primary", key=f"confirm-delete-{d.document_id}"):
                        try:
                            ctx.client.delete_document(d.document_id)
                        except ApiError as exc:
                            st.error(tr("error.generic", message=exc.message))
                        else:
                            st.toast(tr("docs.deleted", name=name), icon=":material/delete:")
                            st.rerun()
        st.caption(tr("docs.count", count=len(documents)))
