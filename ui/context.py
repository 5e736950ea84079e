"""What every page is handed: the API client, the person's choices and the API's state.

Session-state keys live here, in one place, so pages (and the login page to come) agree on them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from app.api.schemas import CollectionOut, HealthResponse
from ui.client import DEFAULT_API_URL, ApiClient, ApiError, ApiUnreachable
from ui.i18n import DEFAULT_LANGUAGE, t

# Session-state keys
LANG = "lang"
COLLECTION = "collection"
ALL_COLLECTIONS = ""  # the picker's value for "search everything"
TURNS = "turns"
TOKEN = "token"  # the bearer token a login page will set


def init_state() -> None:
    st.session_state.setdefault(LANG, DEFAULT_LANGUAGE)
    st.session_state.setdefault(COLLECTION, ALL_COLLECTIONS)
    st.session_state.setdefault(TURNS, [])
    st.session_state.setdefault(TOKEN, None)


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
    try:
        collections = client.collections()
    except ApiError as exc:
        return ApiStatus(url=client.base_url, health=health, error=exc)
    return ApiStatus(url=client.base_url, health=health, collections=collections)


@dataclass(slots=True)
class PageContext:
    client: ApiClient
    status: ApiStatus
    pages: dict[str, Any] = field(default_factory=dict)  # name -> st.Page, for st.page_link

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
