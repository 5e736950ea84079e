"""What every page is handed: the API client, the person's choices and the API's state.

Session-state keys live here, in one place, so pages agree on them. Signing in stores the API's
session token and the person's account (`/v1/auth/me`) in the Streamlit session only: they never
reach the browser, and closing the tab ends them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from app.api.schemas import CollectionOut, HealthResponse, MeResponse
from ui.client import DEFAULT_API_URL, ApiClient, ApiError, ApiUnreachable
from ui.i18n import DEFAULT_LANGUAGE, t

# Session-state keys
LANG = "lang"
COLLECTION = "collection"
ALL_COLLECTIONS = ""  # the picker's value for "search everything"
TURNS = "turns"
TOKEN = "token"  # the API session token from POST /v1/auth/login
ME = "me"  # the signed-in person's MeResponse
CONVERSATION = "conversation_id"  # the server-side conversation the chat shows (None: a new one)
SESSION_ENDED = "session_ended"  # why the person was sent back to the login page


def init_state() -> None:
    st.session_state.setdefault(LANG, DEFAULT_LANGUAGE)
    st.session_state.setdefault(COLLECTION, ALL_COLLECTIONS)
    st.session_state.setdefault(TURNS, [])
    st.session_state.setdefault(TOKEN, None)
    st.session_state.setdefault(ME, None)
    st.session_state.setdefault(CONVERSATION, None)


def sign_out(reason: str | None = None) -> None:
    """Forget the session (token, account, chat); `reason` is a label key the login page shows."""
    for key in (TOKEN, ME, CONVERSATION):
        st.session_state[key] = None
    st.session_state[TURNS] = []
    st.session_state[SESSION_ENDED] = reason


def public_api_url(client: ApiClient) -> str:
    """The API's address as the person's browser reaches it (links to documents open there)."""
    return (os.environ.get("CONSULTA_PUBLIC_API_URL", "").strip() or client.base_url).rstrip("/")


def client_from_env() -> ApiClient:
    url = os.environ.get("CONSULTA_API_URL", "").strip() or DEFAULT_API_URL
    return ApiClient(url, token=st.session_state.get(TOKEN))


@dataclass(frozen=True, slots=True)
class ApiStatus:
    """What the API said at the start of this run: its health and collections, or why it did not answer."""

    url: str
    health: HealthResponse | None = None
    collections: list[CollectionOut] = field(default_factory=list)
    error: ApiError | None = None

    @property
    def reachable(self) -> bool:
        return self.health is not None and not isinstance(self.error, ApiUnreachable)

    @property
    def has_documents(self) -> bool:
        if self.health is not None and self.health.index_chunks > 0:
            return True
        return any(c.documents > 0 for c in self.collections)


def fetch_status(client: ApiClient) -> ApiStatus:
    try:
        health = client.health()
    except ApiError as exc:
        return ApiStatus(url=client.base_url, error=exc)
    if not client.token:  # collections are listed to signed-in people only
        return ApiStatus(url=client.base_url, health=health)
    try:
        collections = client.collections()
    except ApiError as exc:
        return ApiStatus(url=client.base_url, health=health, error=exc)
    return ApiStatus(url=client.base_url, health=health, collections=collections)


@dataclass(slots=True)
class PageContext:
    client: ApiClient
    status: ApiStatus
    me: MeResponse | None = None
    pages: dict[str, Any] = field(default_factory=dict)  # name -> st.Page, for st.page_link

    @property
    def role(self) -> str | None:
        return self.me.user.role if self.me else None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_write(self) -> bool:
        """May upload or delete somewhere: admins, and editors with a write grant."""
        if self.is_admin:
            return True
        return self.role == "editor" and self.me is not None and (self.me.writable is None or bool(self.me.writable))

    def may_write(self, collection: str) -> bool:
        if self.is_admin:
            return True
        if self.role != "editor" or self.me is None:
            return False
        return self.me.writable is None or collection in self.me.writable or "*" in self.me.writable

    @property
    def lang(self) -> str:
        return st.session_state.get(LANG, DEFAULT_LANGUAGE)

    @property
    def collection(self) -> str | None:
        return st.session_state.get(COLLECTION) or None

    @property
    def t(self) -> Callable[..., str]:
        lang = self.lang
        return lambda key, **values: t(lang, key, **values)
