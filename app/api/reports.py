"""Evaluation reports, for the UI's Evaluation page: what `consulta eval run` wrote under `<data dir>/reports/`.

Each run is a folder `<data dir>/reports/<UTC timestamp>/` holding `summary.json` and a self-contained
`report.html` (eval/report.py). Admins only: an evaluation set may be generated from any collection, so
its questions and answers would otherwise reach people without a grant on it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from app.api.access import AUTH_ERRORS
from app.api.deps import AdminDep, ServicesDep
from app.api.schemas import ErrorResponse
from app.errors import NotFoundError

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/eval")
_REPORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
MAX_REPORTS = 50


class ReportConfig(BaseModel):
    name: str
    settings: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float | None] = Field(default_factory=dict)


class ReportOut(BaseModel):
    id: str = Field(description="The report folder's name (a UTC timestamp for default runs)")
    timestamp: str | None = None
    dataset: str | None = Field(default=None, description="The dataset's name")
    n: int | None = Field(default=None, description="Questions evaluated")
    command: str | None = None
    configs: list[ReportConfig] = Field(default_factory=list)
    has_html: bool


class ReportsResponse(BaseModel):
    reports: list[ReportOut]


def reports_dir(settings: Any) -> Path:
    return Path(settings.data_dir) / "reports"


def _summary(folder: Path) -> ReportOut | None:
    try:
        run = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        logger.warning("skipping evaluation report %s: %s", folder, e)
        return None
    if not isinstance(run, dict):
        return None
    dataset = run.get("dataset")
    configs = []
    for c in run.get("configs") or []:
        if isinstance(c, dict):
            metrics = {k: v for k, v in (c.get("metrics") or {}).items() if isinstance(v, int | float) or v is None}
            configs.append(ReportConfig(name=str(c.get("name", "?")), settings=c.get("settings") or {},
                                        metrics=metrics))
    return ReportOut(id=folder.name, timestamp=run.get("timestamp"), n=run.get("n"), command=run.get("command"),
                     dataset=dataset.get("name") if isinstance(dataset, dict) else dataset, configs=configs,
                     has_html=(folder / "report.html").is_file())


def _folder(settings: Any, report_id: str) -> Path:
    root = reports_dir(settings).resolve()
    if _REPORT_ID.match(report_id):
        folder = (root / report_id).resolve()
        if folder.parent == root and folder.is_dir():
            return folder
    raise NotFoundError(f"no evaluation report {report_id!r}")


@router.get("/reports", response_model=ReportsResponse, tags=["evaluation"], responses=AUTH_ERRORS)
def list_reports(s: ServicesDep, admin: AdminDep) -> ReportsResponse:
    """The latest evaluation runs (newest first, at most 50), with each configuration's metrics."""
    root = reports_dir(s.settings)
    folders = sorted((p for p in root.iterdir() if p.is_dir() and (p / "summary.json").is_file()),
                     key=lambda p: p.name, reverse=True) if root.is_dir() else []
    reports = [r for r in (_summary(f) for f in folders[:MAX_REPORTS]) if r is not None]
    return ReportsResponse(reports=reports)


@router.get("/reports/{report_id}", response_class=HTMLResponse, tags=["evaluation"], responses={
    **AUTH_ERRORS, 200: {"content": {"text/html": {}}, "description": "The run's self-contained HTML report"},
    404: {"model": ErrorResponse, "description": "No such report, or it has no HTML"}})
def report_html(report_id: str, s: ServicesDep, admin: AdminDep) -> HTMLResponse:
    """One run's report.html (plots inline, no external resources)."""
    path = _folder(s.settings, report_id) / "report.html"
    if not path.is_file():
        raise NotFoundError(f"evaluation report {report_id!r} has no HTML")
    return HTMLResponse(path.read_text(encoding="utf-8"),
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "default-src 'none'; img-src data:; "
                                                            "style-src 'unsafe-inline'; script-src 'unsafe-inline'"})
