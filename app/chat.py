"""The ask use-case, shared by `POST /v1/ask` and `consulta ask`: the conversation, the follow-up rewritten to
stand alone, the answer, what is saved and audited.

The front doors are thin adapters over `ChatService.ask`: the API turns its events into JSON or server-sent
events, the CLI prints them. A signed-in caller's question is saved in a conversation and audited, and their
citations carry signed links to the files; without a caller (the CLI) nothing is saved.
"""

from __future__ import annotations

import logging
from collections.abc import Generator as _Generator
from typing import TYPE_CHECKING, Any, cast

from app.api.schemas import AskResponse, CitationOut, SourcesOut
from app.conversations import standalone_question
from app.errors import ConsultaError
from retrieval.language import detect_language
from retrieval.types import SearchFilter

if TYPE_CHECKING:
    from app.assistant import Answer, Assistant, Citation
    from app.audit import AuditLog
    from app.auth import LinkSigner, Principal
    from app.conversations import ConversationStore
    from serving.generator import Generator

logger = logging.getLogger(__name__)

Events = _Generator[tuple[str, Any], None, None]  # close() cancels what is left of the answer


class ChatService:
    """Answers a question for a caller, yielding ("sources", SourcesOut), ("token", str)..., ("done", AskResponse)."""

    def __init__(self, assistant: Assistant, conversations: ConversationStore, audit: AuditLog,
                 generator: Generator, *, links: LinkSigner | None = None, history_tokens: int = 768) -> None:
        self.assistant = assistant
        self.conversations = conversations
        self.audit = audit
        self.generator = generator  # rewrites a follow-up into a standalone question
        self.links = links  # signs the citations' links to the files (for a caller)
        self.history_tokens = history_tokens  # 0: follow-ups are not rewritten

    def ask(self, question: str, *, caller: Principal | None = None, conversation_id: str | None = None,
            collection: str | None = None, filter: SearchFilter | None = None, k: int | None = None,
            language: str | None = None) -> Events:
        """The answer's events. Nothing runs until the first is asked for; errors a caller can cause (no such
        conversation, no index, a busy engine) are raised then, before any event.

        `filter` is what the caller may read (for a caller without one: their own search filter); `collection`
        is recorded with the conversation and the audit row. Closing the iterator cancels the generation.
        """
        if conversation_id is not None and caller is None:
            raise ConsultaError("only a signed-in caller has conversations")
        if caller is not None and filter is None:
            filter = caller.search_filter(collection)
        elif filter is None and collection:
            filter = SearchFilter(collections=(collection,))
        conversation, standalone = self._open(question, caller, conversation_id, collection)
        events = cast(Events, self.assistant.stream(standalone or question, k=k, filter=filter,
                                                    language=language or detect_language(question)))
        try:
            for event, payload in events:
                if event == "sources":
                    yield "sources", SourcesOut(citations=[self._cite(c, caller) for c in payload],
                                                conversation_id=conversation)
                elif event == "done":
                    yield "done", self._finish(payload, question, caller, conversation, collection, standalone)
                    return
                else:
                    yield event, payload
        finally:
            events.close()  # the assistant's cleanup: cancels generation, frees the KV cache

    def _open(self, question: str, caller: Principal | None, conversation_id: str | None,
              collection: str | None) -> tuple[str | None, str | None]:
        """The conversation the question goes in (none without a caller) and, for a follow-up, the question
        rewritten from its history (None when it is used as asked)."""
        if caller is None:
            return None, None
        if conversation_id:
            conversation = self.conversations.get(caller.user_id, conversation_id)["id"]
            history = self.conversations.messages(caller.user_id, conversation)
        else:
            conversation = self.conversations.create(caller.user_id, question, collection)["id"]
            history = []
        standalone = None
        if history and self.history_tokens > 0:
            rewritten = standalone_question(self.generator, question, history, budget_tokens=self.history_tokens)
            standalone = rewritten if rewritten != question else None
        self.conversations.add(conversation, "user", question,
                               {"standalone_question": standalone, "collection": collection})
        return conversation, standalone

    def _finish(self, answer: Answer, question: str, caller: Principal | None, conversation: str | None,
                collection: str | None, standalone: str | None) -> AskResponse:
        """The response; for a caller, the answer saved in the conversation and the question audited."""
        response = AskResponse.from_answer(answer, question=question, url=lambda c: self._url(c, caller))
        response.standalone_question = standalone
        if caller is None or conversation is None:
            return response
        response.conversation_id = conversation
        response.message_id = self.conversations.add(
            conversation, "assistant", answer.text,
            {"refused": answer.refused, "collection": collection,
             "citations": [c.model_dump() for c in response.citations]})
        self.audit.record("ask", user_id=caller.user_id, username=caller.username, collection=collection or "*",
                          target=conversation, question=question, refused=answer.refused,
                          cited=sorted({c.source for c in answer.citations}))
        return response

    def _cite(self, c: Citation, caller: Principal | None) -> CitationOut:
        return CitationOut.from_citation(c, self._url(c, caller))

    def _url(self, c: Citation, caller: Principal | None) -> str | None:
        """A signed link that opens the cited file at its page (GET /v1/documents/{id}/file), for the caller."""
        if caller is None or self.links is None or not c.document_id:
            return None
        return (f"/v1/documents/{c.document_id}/file?{self.links.query(c.document_id, caller.user_id)}"
                + (f"#page={c.page}" if c.page else ""))
