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

from ui.admin import render_admin  # noqa: E402
from ui.chat import render_chat  # noqa: E402
from ui.client import ApiError, ApiUnreachable  # noqa: E402
from ui.context import ME, TOKEN, PageContext, client_from_env, fetch_status, init_state, sign_out  # noqa: E402
from ui.documents import render_documents  # noqa: E402
from ui.evaluation import render_evaluation  # noqa: E402
from ui.login import render_login  # noqa: E402
from ui.sidebar import render_sidebar  # noqa: E402

_ASSETS = _UI_DIR / "assets"


def build_pages(ctx: PageContext) -> dict[str, st.Page]:
    """The pages this person may see: only the sign-in page until they sign in; then the chat,
    Documents for editors and admins, Admin and Evaluation for admins."""
    tr = ctx.t
    if ctx.me is None:  # every address shows the sign-in page, and the page asked for once signed in
        return {
            name: st.Page(lambda: render_login(ctx), title=tr("nav.login"), icon=":material/login:",
                          url_path=name, default=name == "chat")
            for name in ("chat", "documents", "admin", "evaluation")
        }
    pages = {"chat": st.Page(lambda: render_chat(ctx), title=tr("nav.chat"), icon=":material/chat:",
                             url_path="chat", default=True)}
    if ctx.can_write:
        pages["documents"] = st.Page(lambda: render_documents(ctx), title=tr("nav.documents"),
                                     icon=":material/folder:", url_path="documents")
    if ctx.is_admin:
        pages["admin"] = st.Page(lambda: render_admin(ctx), title=tr("nav.admin"),
                                 icon=":material/admin_panel_settings:", url_path="admin")
        pages["evaluation"] = st.Page(lambda: render_evaluation(ctx), title=tr("nav.evaluation"),
                                      icon=":material/monitoring:", url_path="evaluation")
    return pages


def _signed_in_account(ctx: PageContext) -> None:
    """Check the session token (every run, so a revoked session or a new role applies at once)."""
    if not st.session_state.get(TOKEN):
        ctx.me = None
        return
    if not ctx.status.reachable:  # keep them signed in; their pages say the API is down
        ctx.me = st.session_state.get(ME)
        return
    try:
        ctx.me = st.session_state[ME] = ctx.client.me()
    except ApiUnreachable:
        ctx.me = st.session_state.get(ME)
    except ApiError as exc:
        if exc.status == 401:
            sign_out("login.expired")
            st.rerun()
        ctx.me = st.session_state.get(ME)


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
    _signed_in_account(ctx)
    ctx.pages = build_pages(ctx)
    page = st.navigation(list(ctx.pages.values()), position="sidebar" if ctx.me else "hidden")
    render_sidebar(ctx)
    page.run()


main()
