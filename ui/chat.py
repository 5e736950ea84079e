"""The chat page: questions in, streamed answers out, each with citation chips, feedback and timings.

The conversation lives on the server (/v1/conversations); the page keeps a copy of its turns in the
session so that a rerun does not refetch it, and reloads it when another conversation is picked.
"""

from __future__ import annotations

from pathlib import PurePath

import streamlit as st

from app.api.schemas import AskRequest, CitationOut
from ui.client import ApiError, DoneEvent, ErrorEvent, SourcesEvent, TokenEvent
from ui.context import CONVERSATION, TURNS, PageContext, public_api_url
from ui.i18n import format_ms
from ui.markup import no_math, plain
from ui.sidebar import render_unreachable
from ui.turns import Turn

CURSOR = "▌"
CLOSEST_ON_REFUSAL = 3
# The API's own limit on a question (AskRequest.question's max_length)
MAX_QUESTION_CHARS = next(
    m.max_length for m in AskRequest.model_fields["question"].metadata if hasattr(m, "max_length")
)
USER_AVATAR = ":material/person:"
ASSISTANT_AVATAR = ":material/forum:"


def render_chat(ctx: PageContext) -> None:
    tr = ctx.t
    if not ctx.status.reachable:
        render_unreachable(ctx)
        return

    turns: list[Turn] = st.session_state[TURNS]
    if not turns:
        _render_empty_state(ctx)
    for i, turn in enumerate(turns):
        with st.chat_message("user", avatar=USER_AVATAR):
            st.markdown(no_math(turn.question))
        with st.chat_message("assistant", avatar=ASSISTANT_AVATAR), st.container(key=f"answer-{i}"):
            _render_answer(ctx, turn, i)

    question = st.chat_input(
        tr("chat.placeholder"),
        key="chat_input",
        max_chars=MAX_QUESTION_CHARS,
        disabled=not ctx.status.has_documents,
    )
    if question and question.strip():
        turn = Turn(question=question.strip(), collection=ctx.collection)
        turns.append(turn)  # kept even if a rerun cuts the stream short
        with st.chat_message("user", avatar=USER_AVATAR):
            st.markdown(no_math(turn.question))
        with st.chat_message("assistant", avatar=ASSISTANT_AVATAR), st.container(key=f"answer-{len(turns) - 1}"):
            _stream_answer(ctx, turn, len(turns) - 1)
        st.rerun()  # draw the finished conversation the one way history is drawn


def _render_empty_state(ctx: PageContext) -> None:
    tr = ctx.t
    with st.container(key="chat-empty"):
        st.title(tr("chat.title"))
        st.markdown(tr("chat.welcome"))
        if not ctx.status.collections:
            if ctx.can_write:
                st.info(tr("chat.no_documents"), icon=":material/upload_file:")
                if "documents" in ctx.pages:
                    st.page_link(ctx.pages["documents"], label=tr("chat.go_documents"),
                                 icon=":material/arrow_forward:")
            else:
                st.info(tr("chat.no_collections"), icon=":material/lock:")
            return
        if ctx.collection:
            st.caption(tr("chat.scope_one", name=plain(ctx.collection)))
        else:
            st.caption(tr("chat.scope_all"))


def _stream_answer(ctx: PageContext, turn: Turn, index: int) -> None:
    tr = ctx.t
    slot = st.empty()
    slot.caption(tr("chat.searching"))
    try:
        events = ctx.client.ask_stream(
            turn.question, collection=turn.collection, conversation_id=st.session_state.get(CONVERSATION)
        )
        for event in events:
            match event:
                case SourcesEvent(citations=citations, conversation_id=conversation_id):
                    turn.sources = citations
                    if conversation_id:
                        st.session_state[CONVERSATION] = conversation_id
                    if not turn.answer:
                        slot.caption(tr("chat.reading", count=len(citations)))
                case TokenEvent(text=text):
                    turn.answer += text
                    slot.markdown(no_math(turn.answer) + CURSOR)
                case DoneEvent(response=r):
                    turn.answer = r.answer or turn.answer
                    turn.citations, turn.refused, turn.timings, turn.model = r.citations, r.refused, r.timings, r.model
                    turn.message_id, turn.done = r.message_id, True
                    if r.conversation_id:
                        st.session_state[CONVERSATION] = r.conversation_id
                case ErrorEvent(error=error):
                    turn.error = error.message
    except ApiError as exc:
        turn.error = exc.message
    with slot.container():
        _render_answer(ctx, turn, index)


def _render_answer(ctx: PageContext, turn: Turn, index: int) -> None:
    tr = ctx.t
    if turn.answer:
        st.markdown(no_math(turn.answer))
    if turn.error:
        st.error(tr("chat.error", message=turn.error), icon=":material/error:")
    if not turn.done:
        if not turn.error:
            st.caption(tr("chat.interrupted"))
        return
    citations = turn.citations or []
    if turn.refused:
        closest = (turn.sources or citations)[:CLOSEST_ON_REFUSAL]
        with st.container(key=f"refusal-{index}"):
            st.info(tr("chat.refused") if closest else tr("chat.refused_none"), icon=":material/search_off:")
        _render_citations(ctx, closest, index)
    else:
        _render_citations(ctx, citations or turn.sources, index)
    with st.container(horizontal=True, vertical_alignment="center", key=f"meta-{index}"):
        if turn.message_id:
            _render_feedback(ctx, turn, index)
        if turn.timings is not None:
            with st.container(key=f"timings-{index}"):
                parts = tr(
                    "chat.timings",
                    retrieval=format_ms(ctx.lang, turn.timings.retrieval_ms),
                    ttft=format_ms(ctx.lang, turn.timings.ttft_ms),
                    total=format_ms(ctx.lang, turn.timings.total_ms),
                )
                model = f" · `{turn.model}`" if turn.model else ""
                st.caption(f":material/timer: {parts}{model}")


def _render_feedback(ctx: PageContext, turn: Turn, index: int) -> None:
    """Thumbs up/down (saved at once) and a comment, on one answer (POST /v1/feedback)."""
    tr = ctx.t
    key = f"thumbs-{turn.message_id}"
    if key not in st.session_state and turn.rating is not None:
        st.session_state[key] = 1 if turn.rating > 0 else 0

    def save(comment: str | None = None) -> None:
        choice = st.session_state.get(key)
        if choice is None:
            return
        rating = 1 if choice == 1 else -1
        text = turn.comment if comment is None else comment.strip()
        try:
            ctx.client.feedback(turn.message_id or "", rating, text or None)
        except ApiError as exc:
            st.toast(tr("error.generic", message=exc.message), icon=":material/error:")
            return
        turn.rating, turn.comment = rating, text or None
        st.toast(tr("feedback.thanks"), icon=":material/check:")

    with st.container(key=f"feedback-{index}", horizontal=True, vertical_alignment="center", width="content"):
        st.feedback("thumbs", key=key, on_change=save)
        with st.popover(tr("feedback.comment"), icon=":material/comment:", type="tertiary",
                        key=f"comment-{index}"):
            comment_key = f"comment-text-{turn.message_id}"
            st.session_state.setdefault(comment_key, turn.comment or "")
            st.text_area(tr("feedback.comment_label"), key=comment_key, max_chars=4000)
            rated = st.session_state.get(key) is not None
            if not rated:
                st.caption(tr("feedback.rate_first"))
            if st.button(tr("feedback.send"), key=f"send-comment-{index}", disabled=not rated, type="primary"):
                save(st.session_state.get(comment_key, ""))
        if turn.rating is not None:
            st.caption(tr("feedback.saved_up") if turn.rating > 0 else tr("feedback.saved_down"))


def _render_citations(ctx: PageContext, citations: list[CitationOut], index: int) -> None:
    """One chip per cited passage, `[n] file p.N`, opening onto its snippet, where it is, and the file."""
    if not citations:
        return
    with st.container(horizontal=True, gap="small", key=f"citations-{index}"):
        for c in sorted(citations, key=lambda c: c.n):
            with st.popover(chip_label(ctx, c), key=f"cite-{index}-{c.n}",
                            icon=":material/flag:" if c.supported is False else None):
                _render_citation(ctx, c, index)


def _render_citation(ctx: PageContext, c: CitationOut, index: int) -> None:
    tr = ctx.t
    name = PurePath(c.source).name
    st.markdown(f"**{plain(f'[{c.n}] ' + (c.title or name))}**")
    where = [f"{tr('cite.source')}: `{name}`"]
    if c.page is not None:
        where.append(tr("cite.page", page=c.page))
    if c.section:
        where.append(f"{tr('cite.section')}: {plain(c.section)}")
    if c.collection:
        where.append(f"{tr('cite.collection')}: {plain(c.collection)}")
    st.caption("  \n".join(where))
    if c.supported is False:
        st.warning(tr("cite.flagged"), icon=":material/flag:")
    quote = (c.snippet or c.text).strip()
    st.markdown("\n".join("> " + no_math(line) for line in quote.splitlines() or [""]))
    if c.snippet and c.snippet.strip() != c.text.strip():
        with st.expander(tr("cite.passage")):
            st.markdown(no_math(c.text))
    if not c.document_id:
        return
    with st.container(horizontal=True, gap="small"):
        if c.url:
            label = tr("cite.open_page", page=c.page) if c.page else tr("cite.open")
            st.link_button(label, public_api_url(ctx.client) + c.url, icon=":material/open_in_new:",
                           type="primary")
        client, document_id = ctx.client, c.document_id
        st.download_button(
            tr("cite.download"),
            data=lambda: client.document_file(document_id),
            file_name=name,
            icon=":material/download:",
            key=f"download-{index}-{c.n}",
            on_click="ignore",
        )


def chip_label(ctx: PageContext, c: CitationOut) -> str:
    label = plain(f"[{c.n}] {PurePath(c.source).name}")
    if c.page is not None:
        label += " · " + ctx.t("cite.page_short", page=c.page)
    return label
