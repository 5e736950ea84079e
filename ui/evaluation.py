"""The Evaluation page (admins): the latest `consulta eval run` reports, their metrics, and each run's
self-contained HTML report with its plots (GET /v1/eval/reports)."""

from __future__ import annotations

import base64
from datetime import datetime

import streamlit as st

from ui.client import ApiError
from ui.context import PageContext
from ui.markup import plain
from ui.sidebar import render_unreachable

REPORT_HEIGHT = 900
HEADLINE = ("answer.f1", "retrieval.hit@10", "refusal.unanswerable_rate", "refusal.false_rate",
            "citation.source_accuracy", "latency.ttft_ms_p50")


def when(report_id: str) -> str:
    """'20261123T113723Z' -> '2026-11-23 11:37 UTC'; other folder names as they are."""
    try:
        return datetime.strptime(report_id, "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return report_id


def render_evaluation(ctx: PageContext) -> None:
    tr = ctx.t
    st.title(tr("eval.title"))
    if not ctx.status.reachable:
        render_unreachable(ctx)
        return
    try:
        reports = ctx.client.eval_reports()
    except ApiError as exc:
        key = "eval.not_allowed" if exc.status == 403 else "error.generic"
        st.warning(tr(key, message=exc.message), icon=":material/lock:")
        return
    if not reports:
        with st.container(key="eval-empty"):
            st.info(tr("eval.empty"), icon=":material/monitoring:")
        return
    labels = {
        r["id"]: f"{when(r['id'])} · {r.get('dataset') or '?'} · "
        + tr("eval.questions", count=r.get("n") or 0)
        for r in reports
    }
    chosen = st.selectbox(tr("eval.pick"), list(labels), format_func=labels.__getitem__, key="eval-report")
    report = next(r for r in reports if r["id"] == chosen)
    with st.container(key="eval-summary"):
        if report.get("command"):
            st.caption(f"`{report['command']}`")
        configs = report.get("configs") or []
        names = sorted({m for c in configs for m in c.get("metrics", {})})
        rows = [{tr("eval.metric"): m, **{plain(c["name"]): _fmt(c["metrics"].get(m)) for c in configs}}
                for m in sorted(names, key=lambda m: (m not in HEADLINE, m))]
        if configs:
            first = configs[0]["metrics"]
            shown = [m for m in HEADLINE if first.get(m) is not None]
            for col, m in zip(st.columns(len(shown)) if shown else [], shown, strict=True):
                col.metric(m, _fmt(first[m]))
        if rows:
            with st.expander(tr("eval.all_metrics", count=len(rows))):
                st.table(rows, border="horizontal", hide_index=True)
    _render_trend(ctx, reports)
    if report.get("has_html"):
        _render_html(ctx, chosen)


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:,.0f}"


def _render_trend(ctx: PageContext, reports: list[dict]) -> None:
    """A headline metric of the first configuration across the listed runs, oldest to newest."""
    tr = ctx.t
    series = {}
    for r in reversed(reports):
        configs = r.get("configs") or []
        if configs and (value := configs[0].get("metrics", {}).get("answer.f1")) is not None:
            series[when(r["id"])] = value
    if len(series) >= 2:
        st.caption(tr("eval.trend"))
        st.line_chart({"answer.f1": series}, height=200)


def _render_html(ctx: PageContext, report_id: str) -> None:
    tr = ctx.t
    try:
        html = ctx.client.eval_report_html(report_id)
    except ApiError as exc:
        st.error(tr("error.generic", message=exc.message), icon=":material/error:")
        return
    st.download_button(tr("eval.download"), html, file_name=f"consulta-eval-{report_id}.html",
                       mime="text/html", icon=":material/download:", on_click="ignore", key="eval-download")
    # A data: URL gives the report an opaque origin: its script cannot reach this app's page.
    src = "data:text/html;charset=utf-8;base64," + base64.b64encode(html.encode("utf-8")).decode("ascii")
    with st.container(key="eval-report-frame"):
        st.iframe(src, height=REPORT_HEIGHT)
