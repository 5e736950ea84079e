"""Conversations: each user's history in SQLite, follow-ups rewritten into standalone questions, feedback.

A follow-up ("and in Barcelona?") means little to retrieval on its own, so before answering it the local
model rewrites it, from the latest turns that fit a token budget, into a question that stands alone.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from app.db import Database, new_id, now
from app.errors import ConsultaError, NotFoundError
from serving.generator import Generator, SamplingParams

logger = logging.getLogger(__name__)

TITLE_CHARS = 80

REWRITE_SYSTEM = ("You rewrite the user's last question so that it can be understood without the conversation. "
                  "Replace pronouns and references with what they refer to. Keep the question's language. "
                  "Do not answer it. Write only the rewritten question.")
REWRITE_USER = "Conversation:\n{history}\n\nLast question: {question}\nRewritten question:"


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    role: str
    content: str
    data: dict[str, Any]
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "content": self.content, "created_at": self.created_at,
                **self.data}


class ConversationStore:
    """Create, list, rename and delete a user's conversations; add messages; record feedback."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, user_id: int, title: str, collection: str | None = None) -> dict[str, Any]:
        cid, at = new_id(), now()
        title = _title(title)
        with self.db.write() as conn:
            conn.execute("INSERT INTO conversations(id, user_id, title, collection, created_at, updated_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (cid, user_id, title, collection, at, at))
        return self.get(user_id, cid)

    def get(self, user_id: int, conversation_id: str) -> dict[str, Any]:
        """One of the user's conversations; NotFoundError for another user's (they do not learn it exists)."""
        with self.db.read() as conn:
            row = conn.execute("SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n "
                               "FROM conversations c WHERE c.id = ? AND c.user_id = ?",
                               (conversation_id, user_id)).fetchone()
        if row is None:
            raise NotFoundError(f"no conversation {conversation_id}")
        return _conversation(row)

    def list(self, user_id: int, limit: int = 100) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n "
                                "FROM conversations c WHERE c.user_id = ? ORDER BY c.updated_at DESC, c.rowid DESC "
                                "LIMIT ?", (user_id, limit)).fetchall()
        return [_conversation(r) for r in rows]

    def rename(self, user_id: int, conversation_id: str, title: str) -> dict[str, Any]:
        self.get(user_id, conversation_id)
        if not title.strip():
            raise ConsultaError("a conversation's title cannot be empty")
        with self.db.write() as conn:
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (_title(title), conversation_id))
        return self.get(user_id, conversation_id)

    def delete(self, user_id: int, conversation_id: str) -> None:
        self.get(user_id, conversation_id)
        with self.db.write() as conn:
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def add(self, conversation_id: str, role: str, content: str, data: dict[str, Any] | None = None) -> str:
        mid = new_id()
        at = now()
        with self.db.write() as conn:
            conn.execute("INSERT INTO messages(id, conversation_id, role, content, data, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (mid, conversation_id, role, content,
                                                       json.dumps(data or {}, ensure_ascii=False), at))
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (at, conversation_id))
        return mid

    def messages(self, user_id: int, conversation_id: str) -> builtins.list[Message]:
        self.get(user_id, conversation_id)
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM messages WHERE conversation_id = ? ORDER BY created_at, rowid",
                                (conversation_id,)).fetchall()
        return [Message(r["id"], r["role"], r["content"], json.loads(r["data"] or "{}"), r["created_at"])
                for r in rows]

    def feedback(self, user_id: int, message_id: str, rating: int, comment: str | None) -> dict[str, Any]:
        """Thumbs up (1) or down (-1) and a comment on an answer in one of the user's conversations."""
        with self.db.read() as conn:
            row = conn.execute("SELECT m.id, m.role, c.collection, m.conversation_id FROM messages m "
                               "JOIN conversations c ON c.id = m.conversation_id "
                               "WHERE m.id = ? AND c.user_id = ?", (message_id, user_id)).fetchone()
        if row is None or row["role"] != "assistant":
            raise NotFoundError(f"no answer {message_id} in your conversations")
        with self.db.write() as conn:
            conn.execute("INSERT INTO feedback(message_id, user_id, rating, comment, created_at) "
                         "VALUES (?, ?, ?, ?, ?) ON CONFLICT(message_id, user_id) DO UPDATE SET "
                         "rating = excluded.rating, comment = excluded.comment, created_at = excluded.created_at",
                         (message_id, user_id, rating, comment, now()))
        return {"message_id": message_id, "conversation_id": row["conversation_id"], "rating": rating,
                "comment": comment}

    def feedback_for(self, user_id: int, message_id: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT rating, comment FROM feedback WHERE message_id = ? AND user_id = ?",
                               (message_id, user_id)).fetchone()
        return dict(row) if row else None


def _title(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TITLE_CHARS else text[:TITLE_CHARS - 1].rstrip() + "…"


def _conversation(row) -> dict[str, Any]:
    return {"id": row["id"], "title": row["title"], "collection": row["collection"], "created_at": row["created_at"],
            "updated_at": row["updated_at"], "messages": row["n"]}


_CITE_MARKS = re.compile(r"\s*\[\d{1,2}\]")


def history_turns(messages: list[Message], generator: Generator, budget_tokens: int) -> list[tuple[str, str]]:
    """The latest (role, text) turns whose tokens fit `budget_tokens`, oldest first; citations marks removed."""
    turns: list[tuple[str, str]] = []
    used = 0
    for m in reversed(messages):
        if m.role == "assistant" and m.data.get("refused"):
            continue  # a refusal tells the rewriter nothing
        text = _CITE_MARKS.sub("", m.content).strip()
        cost = generator.count_tokens(text) + 4
        if used + cost > budget_tokens:
            if not turns:  # the latest turn alone is too long: keep its end
                words = text.split()
                while words and generator.count_tokens(" ".join(words)) + 4 > budget_tokens:
                    words = words[len(words) // 4 + 1:]
                if words:
                    turns.append((m.role, "… " + " ".join(words)))
            break
        turns.append((m.role, text))
        used += cost
    return list(reversed(turns))


def standalone_question(generator: Generator, question: str, messages: list[Message], *,
                        budget_tokens: int = 768, max_tokens: int = 64) -> str:
    """The question rewritten to stand alone, from the history that fits the budget; the question itself
    when there is no history or the model's rewrite looks wrong (empty, an answer, far too long)."""
    turns = history_turns(messages, generator, budget_tokens)
    if not turns:
        return question
    history = "\n".join(f"{'User' if role == 'user' else 'Assistant'}: {text}" for role, text in turns)
    prompt = [{"role": "system", "content": REWRITE_SYSTEM},
              {"role": "user", "content": REWRITE_USER.format(history=history, question=question)}]
    try:
        out = generator.generate(prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0)).text
    except Exception as e:  # noqa: BLE001 - answering the question as asked beats failing it
        logger.warning("could not rewrite the follow-up question (%s); using it as asked", e)
        return question
    rewritten = out.strip().splitlines()[0].strip().strip('"').strip() if out.strip() else ""
    rewritten = re.sub(r"^(rewritten question|question)\s*:\s*", "", rewritten, flags=re.IGNORECASE)
    if not rewritten or len(rewritten) > 4 * len(question) + 200:
        return question
    return rewritten
