"""The sign-in page: user name and password against POST /v1/auth/login."""

from __future__ import annotations

import streamlit as st

from ui.client import ApiError, ApiUnreachable
from ui.context import ME, SESSION_ENDED, TOKEN, TURNS, PageContext
from ui.sidebar import render_unreachable


def render_login(ctx: PageContext) -> None:
    tr = ctx.t
    st.title(tr("login.title"))
    if not ctx.status.reachable:
        render_unreachable(ctx)
        return
    if reason := st.session_state.get(SESSION_ENDED):
        st.info(tr(reason), icon=":material/logout:")
    with st.form("login", border=True, enter_to_submit=True):
        username = st.text_input(tr("login.username"), key="login_username", autocomplete="username")
        password = st.text_input(tr("login.password"), type="password", key="login_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button(tr("login.submit"), type="primary", icon=":material/login:")
    st.caption(tr("login.help"))
    if not submitted:
        return
    if not username.strip() or not password:
        st.warning(tr("login.missing"), icon=":material/warning:")
        return
    try:
        session = ctx.client.login(username.strip(), password)
    except ApiUnreachable as exc:
        st.error(tr("error.generic", message=exc.message), icon=":material/cloud_off:")
        return
    except ApiError as exc:
        key = "login.wrong" if exc.status == 401 else "error.generic"
        with st.container(key="login-error"):
            st.error(tr(key, message=exc.message), icon=":material/lock:")
        return
    st.session_state[TOKEN] = session.token
    st.session_state[ME] = None  # fetched with the token on the next run
    st.session_state[TURNS] = []
    st.session_state[SESSION_ENDED] = None
    st.rerun()
