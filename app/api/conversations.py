"""Conversations (each user's own history) and feedback on answers."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.access import AUTH_ERRORS
from app.api.deps import PrincipalDep, ServicesDep
from app.api.schemas import (
    CitationOut,
    ConversationCreate,
    ConversationDetail,
    ConversationOut,
    ConversationRename,
    ConversationsResponse,
    ErrorResponse,
    FeedbackIn,
    FeedbackOut,
    MessageOut,
)

router = APIRouter(prefix="/v1")
NOT_FOUND = {**AUTH_ERRORS, 404: {"model": ErrorResponse, "description": "No such conversation of yours"}}


@router.get("/conversations", response_model=ConversationsResponse, tags=["conversations"], responses=AUTH_ERRORS)
def list_conversations(s: ServicesDep, principal: PrincipalDep, limit: int = 100) -> ConversationsResponse:
    """Your conversations, most recently used first."""
    return ConversationsResponse(conversations=[ConversationOut(**c) for c in
                                                s.conversations.list(principal.user_id, max(1, min(limit, 500)))])


@router.post("/conversations", response_model=ConversationOut, status_code=201, tags=["conversations"],
             responses=AUTH_ERRORS)
def create_conversation(body: ConversationCreate, s: ServicesDep, principal: PrincipalDep) -> ConversationOut:
    """Start an empty conversation (POST /v1/ask without conversation_id also starts one)."""
    return ConversationOut(**s.conversations.create(principal.user_id, body.title, body.collection))


@router.get("/conversations/{conversation_id}", response_model=ConversationDetail, tags=["conversations"],
            responses=NOT_FOUND)
def get_conversation(conversation_id: str, s: ServicesDep, principal: PrincipalDep) -> ConversationDetail:
    """A conversation with its messages, answers with their citations and your feedback."""
    conv = s.conversations.get(principal.user_id, conversation_id)
    history = []
    for m in s.conversations.messages(principal.user_id, conversation_id):
        d = m.data
        history.append(MessageOut(
            id=m.id, role=m.role, content=m.content, created_at=m.created_at, refused=d.get("refused"),
            citations=[CitationOut(**c) for c in d.get("citations", [])],
            standalone_question=d.get("standalone_question"), collection=d.get("collection"),
            feedback=s.conversations.feedback_for(principal.user_id, m.id) if m.role == "assistant" else None))
    return ConversationDetail(**conv, history=history)


@router.patch("/conversations/{conversation_id}", response_model=ConversationOut, tags=["conversations"],
              responses=NOT_FOUND)
def rename_conversation(conversation_id: str, body: ConversationRename, s: ServicesDep,
                        principal: PrincipalDep) -> ConversationOut:
    return ConversationOut(**s.conversations.rename(principal.user_id, conversation_id, body.title))


@router.delete("/conversations/{conversation_id}", tags=["conversations"], responses=NOT_FOUND)
def delete_conversation(conversation_id: str, s: ServicesDep, principal: PrincipalDep) -> dict[str, str]:
    s.conversations.delete(principal.user_id, conversation_id)
    return {"deleted": conversation_id}


@router.post("/feedback", response_model=FeedbackOut, tags=["conversations"], responses={
    **AUTH_ERRORS, 404: {"model": ErrorResponse, "description": "No such answer in your conversations"}})
def feedback(body: FeedbackIn, s: ServicesDep, principal: PrincipalDep) -> FeedbackOut:
    """Thumbs up (1) or down (-1), with an optional comment, on one of your answers; sending again replaces it."""
    out = s.conversations.feedback(principal.user_id, body.message_id, body.rating, body.comment)
    s.audit.record("feedback", user_id=principal.user_id, username=principal.username, target=body.message_id,
                   rating=body.rating)
    return FeedbackOut(**out)
