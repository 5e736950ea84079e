"""The Admin page: users and roles, collection grants, the audit log, and the engine's health
(read from the API's Prometheus /metrics)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import streamlit as st
from prometheus_client.parser import text_string_to_metric_families

from ui.client import ApiError
from ui.context import PageContext
from ui.markup import plain
from ui.sidebar import render_unreachable

ROLES = ["reader", "editor", "admin"]
PERMISSIONS = ["read", "write"]
AUDIT_ROWS = 100
ENGINE = "consulta_engine"


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """What the admin page shows of the engine; None where the metric is absent (model not loaded yet)."""

    waiting: float | None = None
    running: float | None = None
    tokens_per_s: float | None = None
    ttft_mean_s: float | None = None
    ttft_p50_s: float | None = None
    requests: float | None = None
    kv_usage: float | None = None


def engine_health(metrics_text: str) -> EngineHealth:
    """Read the engine's gauges and its time-to-first-token histogram from Prometheus text."""
    values: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if not sample.name.startswith(ENGINE):
                continue
            if sample.name == f"{ENGINE}_time_to_first_token_seconds_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            else:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    count = values.get(f"{ENGINE}_time_to_first_token_seconds_count")
    total = values.get(f"{ENGINE}_time_to_first_token_seconds_sum")
    return EngineHealth(
        waiting=values.get(f"{ENGINE}_requests_waiting"),
        running=values.get(f"{ENGINE}_requests_running"),
        tokens_per_s=values.get(f"{ENGINE}_tokens_per_second"),
        ttft_mean_s=total / count if count and total is not None else None,
        ttft_p50_s=_quantile(sorted(buckets), 0.5) if count else None,
        requests=values.get(f"{ENGINE}_requests_total", values.get(f"{ENGINE}_requests")),
        kv_usage=values.get(f"{ENGINE}_kv_usage_ratio"),
    )


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated inside its bucket (as PromQL does)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None


def render_admin(ctx: PageContext) -> None:
    tr = ctx.t
    st.title(tr("admin.title"))
    if not ctx.status.reachable:
        render_unreachable(ctx)
        return
    if not ctx.is_admin:
        st.warning(tr("admin.not_allowed"), icon=":material/lock:")
        return
    health, users, grants, audit = st.tabs(
        [tr("admin.tab.health"), tr("admin.tab.users"), tr("admin.tab.grants"), tr("admin.tab.audit")]
    )
    with health:
        _render_health(ctx)
    with users:
        _render_users(ctx)
    with grants:
        _render_grants(ctx)
    with audit:
        _render_audit(ctx)


def _fmt(value: float | None, pattern: str = "{:.0f}") -> str:
    return "–" if value is None else pattern.format(value)


def _render_health(ctx: PageContext) -> None:
    tr = ctx.t
    try:
        h = engine_health(ctx.client.metrics_text())
    except ApiError as exc:
        st.error(tr("error.generic", message=exc.message), icon=":material/error:")
        return
    with st.container(key="engine-health"):
        if h.running is None:
            st.info(tr("admin.engine_idle"), icon=":material/hourglass_empty:")
        cols = st.columns(4)
        cols[0].metric(tr("admin.queue"), _fmt(h.waiting), help=tr("admin.queue_help", running=_fmt(h.running)))
        cols[1].metric(tr("admin.tokens_per_s"), _fmt(h.tokens_per_s, "{:.1f}"))
        ms = "{:.0f} ms"
        cols[2].metric(tr("admin.ttft"), _fmt(None if h.ttft_mean_s is None else h.ttft_mean_s * 1000, ms),
                       help=tr("admin.ttft_help", median=_fmt(None if h.ttft_p50_s is None else h.ttft_p50_s * 1000,
                                                              ms)))
        cols[3].metric(tr("admin.kv"), _fmt(None if h.kv_usage is None else h.kv_usage * 100, "{:.0f} %"))
        st.caption(tr("admin.health_source", requests=_fmt(h.requests)))
    st.button(tr("admin.refresh"), icon=":material/refresh:", key="refresh-health")


def _render_users(ctx: PageContext) -> None:
    tr = ctx.t
    try:
        users = ctx.client.users()
    except ApiError as exc:
        st.error(tr("error.generic", message=exc.message), icon=":material/error:")
        return
    with st.container(key="users"):
        st.table(
            [{tr("admin.col.user"): u.username, tr("admin.col.role"): tr(f"role.{u.role}"),
              tr("admin.col.groups"): ", ".join(u.groups), tr("admin.col.disabled"): u.disabled,
              tr("admin.col.created"): u.created_at[:16].replace("T", " ")} for u in users],
            border="horizontal", hide_index=True,
        )
    with st.form("create-user", clear_on_submit=True):
        st.markdown(f"**{tr('admin.new_user')}**")
        cols = st.columns(3)
        username = cols[0].text_input(tr("admin.col.user"), key="new-user-name")
        role = cols[1].selectbox(tr("admin.col.role"), ROLES, format_func=lambda r: tr(f"role.{r}"),
                                 key="new-user-role")
        password = cols[2].text_input(tr("admin.password"), type="password", key="new-user-password",
                                      help=tr("admin.password_help"))
        if st.form_submit_button(tr("admin.create"), icon=":material/person_add:") and username.strip():
            try:
                created = ctx.client.create_user(username.strip(), role, password or None)
            except ApiError as exc:
                st.error(tr("error.generic", message=exc.message), icon=":material/error:")
            else:
                st.success(tr("admin.created", user=plain(created.user.username)), icon=":material/check:")
                if created.password:
                    st.code(created.password, language=None)
                    st.caption(tr("admin.password_once"))
    others = [u for u in users if ctx.me is None or u.username != ctx.me.user.username]
    if not others:
        return
    with st.form("change-role"):
        st.markdown(f"**{tr('admin.change_role')}**")
        cols = st.columns(3)
        who = cols[0].selectbox(tr("admin.col.user"), [u.username for u in others], key="role-user")
        role = cols[1].selectbox(tr("admin.col.role"), ROLES, format_func=lambda r: tr(f"role.{r}"),
                                 key="role-role")
        disabled = cols[2].checkbox(tr("admin.col.disabled"), key="role-disabled")
        if st.form_submit_button(tr("admin.save"), icon=":material/save:"):
            try:
                ctx.client.update_user(who, role=role, disabled=disabled)
            except ApiError as exc:
                st.error(tr("error.generic", message=exc.message), icon=":material/error:")
            else:
                st.rerun()


def _render_grants(ctx: PageContext) -> None:
    tr = ctx.t
    try:
        grants = ctx.client.grants()
        users = [u.username for u in ctx.client.users() if u.role != "admin"]
    except ApiError as exc:
        st.error(tr("error.generic", message=exc.message), icon=":material/error:")
        return
    with st.container(key="grants"):
        if not grants:
            st.info(tr("admin.no_grants"), icon=":material/key_off:")
        for g in grants:
            who = g.get("user") or f"{tr('admin.group')} {g.get('group')}"
            row = st.columns([3, 3, 2, 1], vertical_alignment="center")
            row[0].markdown(plain(str(who)))
            row[1].markdown(plain(str(g.get("collection"))))
            row[2].markdown(tr(f"admin.perm.{g.get('permission')}"))
            key = "revoke-" + "-".join(str(g.get(k)) for k in ("user", "group", "collection", "permission"))
            if row[3].button("", icon=":material/delete:", type="tertiary", help=tr("admin.revoke"), key=key):
                try:
                    ctx.client.revoke(str(g["collection"]), str(g["permission"]), user=g.get("user"),
                                      group=g.get("group"))
                except ApiError as exc:
                    st.error(tr("error.generic", message=exc.message), icon=":material/error:")
                else:
                    st.rerun()
    collections = ["*", *(c.name for c in ctx.status.collections)]
    with st.form("add-grant", clear_on_submit=True):
        st.markdown(f"**{tr('admin.new_grant')}**")
        cols = st.columns(3)
        user = cols[0].selectbox(tr("admin.col.user"), users, key="grant-user")
        collection = cols[1].selectbox(tr("admin.col.collection"), collections, accept_new_options=True,
                                       format_func=lambda c: tr("admin.every_collection") if c == "*" else c,
                                       key="grant-collection")
        permission = cols[2].selectbox(tr("admin.col.permission"), PERMISSIONS,
                                       format_func=lambda p: tr(f"admin.perm.{p}"), key="grant-permission")
        if st.form_submit_button(tr("admin.grant"), icon=":material/key:") and user and collection:
            try:
                ctx.client.grant(collection, permission, user=user)
            except ApiError as exc:
                st.error(tr("error.generic", message=exc.message), icon=":material/error:")
            else:
                st.rerun()


def _render_audit(ctx: PageContext) -> None:
    tr = ctx.t
    cols = st.columns(2)
    user = cols[0].text_input(tr("admin.col.user"), key="audit-user")
    action = cols[1].text_input(tr("admin.audit_action"), key="audit-action", help=tr("admin.audit_action_help"))
    try:
        entries = ctx.client.audit(user=user.strip() or None, action=action.strip() or None, limit=AUDIT_ROWS)
    except ApiError as exc:
        st.error(tr("error.generic", message=exc.message), icon=":material/error:")
        return
    with st.container(key="audit"):
        if not entries:
            st.info(tr("admin.audit_empty"), icon=":material/history:")
            return
        st.table(
            [{tr("admin.col.when"): e.at[:19].replace("T", " "), tr("admin.col.user"): e.user or "",
              tr("admin.col.action"): e.action, tr("admin.col.collection"): e.collection or "",
              tr("admin.col.target"): e.target or "",
              tr("admin.col.detail"): ", ".join(f"{k}={v}" for k, v in e.detail.items())} for e in entries],
            border="horizontal", hide_index=True,
        )
        st.caption(tr("admin.audit_count", count=len(entries)))
