"""The sidebar (API status, collection picker, language) and the 'API unreachable' panel."""

from __future__ import annotations

import hashlib

import streamlit as st

from ui.context import ALL_COLLECTIONS, COLLECTION, LANG, TURNS, PageContext
from ui.i18n import LANGUAGES
from ui.markup import plain


def render_sidebar(ctx: PageContext) -> None:
    tr = ctx.t
    with st.sidebar:
        _render_status(ctx)
        if ctx.status.reachable:
            _render_collection_picker(ctx)
        st.selectbox(
            tr("sidebar.language"),
            options=list(LANGUAGES),
            format_func=LANGUAGES.__getitem__,
            key=LANG,
        )
        if st.session_state.get(TURNS):
            st.button(
                tr("sidebar.new_chat"),
                icon=":material/edit_square:",
                key="new_chat",
                on_click=st.session_state.__setitem__,
                args=(TURNS, []),
                width="stretch",
            )


def _render_collection_picker(ctx: PageContext) -> None:
    tr = ctx.t
    docs = {c.name: c.documents for c in ctx.status.collections}
    options = [ALL_COLLECTIONS, *docs]
    labels = [tr("sidebar.collection_option", name=name, documents=count) for name, count in docs.items()]
    labels.insert(0, tr("sidebar.all_collections"))
    current = st.session_state.get(COLLECTION)
    if current not in options:
        current = ALL_COLLECTIONS  # the collection went away
    # The picker shows a stale label when only the labels change (another language, new counts),
    # so it is a new widget whenever they do; the choice itself lives in st.session_state[COLLECTION].
    key = "collection-picker-" + hashlib.sha1("\0".join(labels).encode()).hexdigest()[:12]
    st.session_state[COLLECTION] = st.selectbox(
        tr("sidebar.collection"),
        options=options,
        index=options.index(current),
        format_func=dict(zip(options, labels, strict=True)).__getitem__,
        key=key,
    )


def _render_status(ctx: PageContext) -> None:
    tr, status = ctx.t, ctx.status
    with st.container(border=True, key="api-status"):
        if not status.reachable:
            st.markdown(f":red[:material/cloud_off:] **{tr('status.down')}**")
            st.caption(f"`{status.url}`")
            return
        health = status.health
        assert health is not None
        if health.status == "ok":
            st.markdown(f":green[:material/check_circle:] **{tr('status.ok')}**")
        else:
            st.markdown(f":orange[:material/warning:] **{tr('status.degraded', status=health.status)}**")
        model = plain(health.model or tr("status.no_model"))
        st.caption(
            f"{tr('status.model')}: {model}  \n"
            f"{tr('status.index')}: {tr('status.index_chunks', count=health.index_chunks)}  \n"
            f"{tr('status.embedder')}: {plain(health.embedder)} · v{plain(health.version)}"
        )
        if status.error is not None:  # health answered, collections did not
            st.caption(f":orange[{status.error.message}]")


def render_unreachable(ctx: PageContext) -> None:
    """The main-area message when the API does not answer: the URL tried and how to start it."""
    tr, status = ctx.t, ctx.status
    reason = getattr(status.error, "reason", None) or (status.error.message if status.error else "")
    with st.container(key="api-unreachable"):
        st.error(
            f"**{tr('down.title')}**\n\n{tr('down.body', url=status.url, reason=reason)}",
            icon=":material/cloud_off:",
        )
        st.markdown(tr("down.howto"))
        st.button(tr("down.retry"), icon=":material/refresh:", key="retry")
