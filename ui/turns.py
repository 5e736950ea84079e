"""A chat turn as the page keeps it in session state, and a saved conversation read back as turns.

Both the chat page (which fills turns in as answers stream) and the sidebar (which reloads a picked
conversation) use them, so they sit below both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.api.schemas import CitationOut, ConversationDetail, Timings


@dataclass(slots=True)
class Turn:
    """One question and its answer, kept in session state; filled in as the answer streams."""

    question: str
    collection: str | None
    answer: str = ""
    sources: list[CitationOut] = field(default_factory=list)  # the numbered passages the model was given
    citations: list[CitationOut] | None = None  # the ones the finished answer cites
    refused: bool = False
    done: bool = False
    timings: Timings | None = None
    model: str | None = None
    message_id: str | None = None  # the answer's id, for feedback
    rating: int | None = None  # 1 or -1, as saved on the server
    comment: str | None = None
    error: str | None = None


def turns_from(conversation: ConversationDetail) -> list[Turn]:
    """A saved conversation as turns: each user message with the assistant message after it."""
    turns: list[Turn] = []
    for m in conversation.history:
        if m.role == "user":
            turns.append(Turn(question=m.content, collection=m.collection))
        elif m.role == "assistant" and turns:
            t = turns[-1]
            t.answer, t.citations, t.refused, t.done = m.content, m.citations, bool(m.refused), True
            t.message_id = m.id
            if m.feedback:
                t.rating, t.comment = m.feedback.get("rating"), m.feedback.get("comment")
    return turns
