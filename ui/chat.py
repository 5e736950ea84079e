"""The chat page: questions in, streamed answers out, each with its citation chips and timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath

import streamlit as st

from app.api.schemas import AskRequest, AskResponse, CitationOut
from ui.client import ApiError, DoneEvent, ErrorEvent, SourcesEvent, TokenEvent
from ui.context import TURNS, PageContext
from ui.i18n import format_ms
from ui.markup import no_math, plain
from ui.sidebar import render_unreachable

CURSOR = "▌"
CLOSEST_ON_REFUSAL = 3
# The API's own limit on a question (AskRequest.question's max_length)
MAX_QUESTION_CHARS = next(
    m.max_length for m in AskRequest.model_fields["question"].metadata if hasattr(m, "max_length")
)
USER_AVATAR = ":material/person:"
ASSISTANT_AVATAR = ":material/forum:"


@dataclass(slots=True)
class Turn:
    """One question and its answer, kept in session state; filled in as the answer streams."""

    question: str
    collection: str | None
    answer: str = ""
    sources: list[CitationOut] = field(default_factory=list)
    response: AskResponse | None = None
    error: str | None = None


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

    question = st.chat_input(tr("chat.placeholder"), key="chat_input", max_chars=MAX_QUESTION_CHARS)
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
        if ctx.collection:
            st.caption(tr("chat.scope_one", name=plain(ctx.collection)))
        else:
            st.caption(tr("chat.scope_all"))
        if not ctx.status.has_documents:
            st.info(tr("chat.no_documents"), icon=":material/upload_file:")
            if "documents" in ctx.pages:
                st.page_link(ctx.pages["documents"], label=tr("chat.go_documents"), icon=":material/arrow_forward:")


def _stream_answer(ctx: PageContext, turn: Turn, index: int) -> None:
    tr = ctx.t
    slot = st.empty()
    slot.caption(tr("chat.searching"))
    try:
        for event in ctx.client.ask_stream(turn.question, collection=turn.collection):
            match event:
                case SourcesEvent(citations=citations):
                    turn.sources = citations
                    if not turn.answer:
                        slot.caption(tr("chat.reading", count=len(citations)))
                case TokenEvent(text=text):
                    turn.answer += text
                    slot.markdown(no_math(turn.answer) + CURSOR)
                case DoneEvent(response=response):
                    turn.response = response
                    turn.answer = response.answer or turn.answer
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
    response = turn.response
    if response is None:
        if not turn.error:
            st.caption(tr("chat.interrupted"))
        return
    if response.refused:
        closest = turn.sources[:CLOSEST_ON_REFUSAL] or response.citations[:CLOSEST_ON_REFUSAL]
        with st.container(key=f"refusal-{index}"):
            st.info(tr("chat.refused") if closest else tr("chat.refused_none"), icon=":material/search_off:")
        _render_citations(ctx, closest, index)
    else:
        _render_citations(ctx, response.citations or turn.sources, index)
    timings = response.timings
    with st.container(key=f"timings-{index}"):
        parts = tr(
            "chat.timings",
            retrieval=format_ms(ctx.lang, timings.retrieval_ms),
            ttft=format_ms(ctx.lang, timings.ttft_ms),
            total=format_ms(ctx.lang, timings.total_ms),
        )
        model = f" · `{response.model}`" if response.model else ""
        st.caption(f":material/timer: {parts}{model}")


def _render_citations(ctx: PageContext, citations: list[CitationOut], index: int) -> None:
    """One chip per cited passage, `[n] file p.N`, opening onto the passage and where it is."""
    if not citations:
        return
    tr = ctx.t
    with st.container(horizontal=True, gap="small", key=f"citations-{index}"):
        for c in sorted(citations, key=lambda c: c.n):
            with st.popover(chip_label(ctx, c), key=f"cite-{index}-{c.n}"):
                st.markdown(f"**{plain(f'[{c.n}] ' + (c.title or PurePath(c.source).name))}**")
                where = [f"{tr('cite.source')}: `{c.source}`"]
                if c.page is not None:
                    where.append(tr("cite.page", page=c.page))
                if c.section:
                    where.append(f"{tr('cite.section')}: {plain(c.section)}")
                st.caption("  \n".join(where))
                st.markdown("\n".join("> " + no_math(line) for line in c.text.strip().splitlines() or [""]))


def chip_label(ctx: PageContext, c: CitationOut) -> str:
    label = plain(f"[{c.n}] {PurePath(c.source).name}")
    if c.page is not None:
        label += " · " + ctx.t("cite.page_short", page=c.page)
    return label
