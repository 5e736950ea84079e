"""The Documents page: upload files into a collection and see what the index holds."""

from __future__ import annotations

from pathlib import PurePath

import streamlit as st

from app.api.schemas import IngestResponse
from ui.client import ApiError, UploadFile
from ui.context import PageContext
from ui.markup import plain
from ui.sidebar import render_unreachable

ACCEPTED_TYPES = ["pdf", "docx", "html", "htm", "md", "markdown", "txt"]  # what ingest/loaders.py reads
DEFAULT_COLLECTION = "default"

# Session-state keys of this page
_UPLOADER_NONCE = "upload_nonce"  # bumped to empty the uploader after an upload
_LAST_RESULT = "upload_result"

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
    _render_upload(ctx)
    _render_listing(ctx)


def _render_upload(ctx: PageContext) -> None:
    tr = ctx.t
    names = [c.name for c in ctx.status.collections]
    default = ctx.collection or (names[0] if names else DEFAULT_COLLECTION)
    options = names if default in names else [default, *names]
    nonce = st.session_state.setdefault(_UPLOADER_NONCE, 0)

    with st.container(border=True, key="upload"):
        st.subheader(tr("docs.upload_header"))
        collection = st.selectbox(
            tr("docs.upload_collection"),
            options=options,
            index=options.index(default),
            accept_new_options=True,
            help=tr("docs.upload_collection_help"),
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
                    st.session_state[_LAST_RESULT] = ctx.client.upload(payload, collection=collection.strip())
                except ApiError as exc:
                    st.session_state[_LAST_RESULT] = exc
            st.session_state[_UPLOADER_NONCE] = nonce + 1
            st.rerun()  # refresh the status, the collections and the listing
        _render_result(ctx, st.session_state.get(_LAST_RESULT))


def _render_result(ctx: PageContext, result: IngestResponse | ApiError | None) -> None:
    tr = ctx.t
    if result is None:
        return
    with st.container(key="upload-result"):
        if isinstance(result, ApiError):
            st.error(tr("docs.upload_failed", message=result.message), icon=":material/error:")
            return
        lines = []
        for f in result.files:
            status = tr(f"docs.status.{f.status}") if f.status in _STATUS_ICON else f.status
            detail = [tr("docs.result_detail", count=f.chunks)] if f.status != "failed" else []
            if f.pages:
                detail.append(tr("docs.result_pages", count=f.pages))
            if f.error:
                detail.append(f.error)
            icon = _STATUS_ICON.get(f.status, ":material/help:")
            extra = "".join(f" · {plain(d)}" for d in detail)
            lines.append(f"{icon} **{plain(PurePath(f.source).name)}** — {status}{extra}")
        st.markdown("  \n".join(lines))
        st.caption(
            tr(
                "docs.upload_summary",
                count=result.chunks_added,
                collection=result.collection,
                total=result.total_chunks,
            )
        )


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
        header = [tr(f"docs.col.{c}") for c in ("title", "source", "collection", "pages", "chunks")]
        rows = [
            "| " + " | ".join(header) + " |",
            "| --- | --- | --- | ---: | ---: |",
        ]
        for d in sorted(documents, key=lambda d: (d.collection, d.source)):
            title = d.title or PurePath(d.source).stem
            pages = "" if d.pages is None else str(d.pages)
            name = plain(PurePath(d.source).name)  # the server's full path means little to staff
            rows.append(f"| {plain(title)} | {name} | {plain(d.collection)} | {pages} | {d.chunks} |")
        st.markdown("\n".join(rows))
        st.caption(tr("docs.count", count=len(documents)))
