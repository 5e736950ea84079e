"""The sidebar: API status, the signed-in account, collection picker, conversations, language;
and the 'API unreachable' panel the pages show."""

from __future__ import annotations

import hashlib

import streamlit as st

from ui.client import ApiError
from ui.context import ALL_COLLECTIONS, COLLECTION, CONVERSATION, LANG, TURNS, PageContext, sign_out
from ui.i18n import LANGUAGES
from ui.markup import plain
from ui.turns import turns_from

MAX_CONVERSATIONS = 30


def render_sidebar(ctx: PageContext) -> None:
    tr = ctx.t
    with st.sidebar:
        _render_status(ctx)
        if ctx.me is not None:
            _render_account(ctx)
            if ctx.status.reachable:
                _render_collection_picker(ctx)
                _render_conversations(ctx)
        st.selectbox(
            tr("sidebar.language"),
            options=list(LANGUAGES),
            format_func=LANGUAGES.__getitem__,
            key=LANG,
        )


def _render_account(ctx: PageContext) -> None:
    tr = ctx.t
    assert ctx.me is not None
    user = ctx.me.user
    with st.container(horizontal=True, vertical_alignment="center", key="account"):
        st.markdown(f":material/account_circle: **{plain(user.username)}** · {tr(f'role.{user.role}')}")
        st.button(tr("sidebar.sign_out"), icon=":material/logout:", key="sign_out", type="tertiary",
                  on_click=_sign_out, args=(ctx,))


def _sign_out(ctx: PageContext) -> None:
    try:
        ctx.client.logout()
    except ApiError:
        pass  # the token is forgotten here either way
    sign_out("login.signed_out")


def _open_conversation(ctx: PageContext, conversation_id: str | None) -> None:
    st.session_state[CONVERSATION] = conversation_id
    st.session_state[TURNS] = []
    if conversation_id is None:
        return
    try:
        st.session_state[TURNS] = turns_from(ctx.client.conversation(conversation_id))
    except ApiError as exc:
        st.session_state[CONVERSATION] = None
        st.toast(ctx.t("error.generic", message=exc.message), icon=":material/error:")


def _render_conversations(ctx: PageContext) -> None:
    tr = ctx.t
    st.button(
        tr("sidebar.new_chat"),
        icon=":material/edit_square:",
        key="new_chat",
        on_click=_open_conversation,
        args=(ctx, None),
        width="stretch",
        disabled=not st.session_state.get(TURNS) and st.session_state.get(CONVERSATION) is None,
    )
    try:
        conversations = ctx.client.conversations()[:MAX_CONVERSATIONS]
    except ApiError as exc:
        st.caption(f":orange[{plain(exc.message)}]")
        return
    current = st.session_state.get(CONVERSATION)
    ids = [c.id for c in conversations]
    titles = {c.id: c.title for c in conversations}
    with st.container(key="conversations"):
        if not conversations:
            st.caption(tr("sidebar.no_conversations"))
            return
        chosen = st.radio(
            tr("sidebar.conversations"),
            options=ids,
            index=ids.index(current) if current in ids else None,
            format_func=lambda i: plain(titles[i]),
            key=f"conversation-list-{current}",  # a new list whenever the chat moves to another conversation
        )
        if chosen is not None and chosen != current and chosen in titles:
            _open_conversation(ctx, chosen)
            st.rerun()
        if current not in ids:
            return
        with st.popover(tr("sidebar.manage"), icon=":material/more_horiz:", type="tertiary", key="conv-manage"):
            title = st.text_input(tr("sidebar.rename"), value=titles[current], max_chars=200, key=f"rename-{current}")
            if st.button(tr("sidebar.rename_save"), key="conv-rename", icon=":material/edit:"):
                if _act(ctx, lambda: ctx.client.rename_conversation(current, title.strip() or titles[current])):
                    st.rerun()
            if st.button(tr("sidebar.delete"), key="conv-delete", icon=":material/delete:"):
                if _act(ctx, lambda: ctx.client.delete_conversation(current)):
                    _open_conversation(ctx, None)
                    st.rerun()


def _act(ctx: PageContext, action) -> bool:
    try:
        action()
    except ApiError as exc:
        st.toast(ctx.t("error.generic", message=exc.message), icon=":material/error:")
        return False
    return True


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
        lines = [f"{tr('status.model')}: {model}"]
        if ctx.me is not None:  # the API counts only the passages the caller may read
            lines.append(f"{tr('status.index')}: {tr('status.index_chunks', count=health.index_chunks)}")
        lines.append(f"{tr('status.embedder')}: {plain(health.embedder)} · v{plain(health.version)}")
        st.caption("  \n".join(lines))
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
