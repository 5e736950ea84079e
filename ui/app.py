"""Consulta's web UI: `streamlit run ui/app.py` (or `consulta ui`).

Talks to the API at $CONSULTA_API_URL (default http://127.0.0.1:8000) over HTTP only.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts this file's folder first on sys.path, where this very file would shadow
# the `app` package; put the repository root there instead so `app.api` and `ui` import.
_UI_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _UI_DIR]
if str(_UI_DIR.parent) not in sys.path:
    sys.path.insert(0, str(_UI_DIR.parent))

import streamlit as st  # noqa: E402

from ui.chat import render_chat  # noqa: E402
from ui.context import PageContext, client_from_env, fetch_status, init_state  # noqa: E402
from ui.documents import render_documents  # noqa: E402
from ui.sidebar import render_sidebar  # noqa: E402

_ASSETS = _UI_DIR / "assets"


def build_pages(ctx: PageContext) -> dict[str, st.Page]:
    """The pages this person may see. A login page slots in here: while there is no session
    token, return only it (and let it set `st.session_state[context.TOKEN]`)."""
    tr = ctx.t

    def chat() -> None:
        render_chat(ctx)

    def documents() -> None:
        render_documents(ctx)

    return {
        "chat": st.Page(chat, title=tr("nav.chat"), icon=":material/chat:", url_path="chat", default=True),
        "documents": st.Page(documents, title=tr("nav.documents"), icon=":material/folder:", url_path="documents"),
    }


def main() -> None:
    st.set_option("client.toolbarMode", "minimal")  # no "Deploy" button for staff
    icon, logo = _ASSETS / "icon.svg", _ASSETS / "logo.svg"
    have_art = icon.exists() and logo.exists()  # a wheel built without package data lacks them
    st.set_page_config(page_title="Consulta", page_icon=str(icon) if have_art else "💬", layout="centered")
    if have_art:
        st.logo(str(logo), icon_image=str(icon), size="large")
    init_state()
    client = client_from_env()
    ctx = PageContext(client=client, status=fetch_status(client))
    ctx.pages = build_pages(ctx)
    page = st.navigation(list(ctx.pages.values()))
    render_sidebar(ctx)
    page.run()


main()
