"""Ingestion in Prometheus terms: jobs by status, files by outcome, and what the index holds.

Read from the jobs table and the loaded index at scrape time (nothing to keep in step by hand); a scrape costs
one small SQL query and a pass over the loaded chunks' document ids.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from app.container import Services

logger = logging.getLogger(__name__)

JOB_STATUSES = ("queued", "running", "done", "failed")


class IngestCollector:
    def __init__(self, services: Services, recent_jobs: int = 1000) -> None:
        self.services = services
        self.recent_jobs = recent_jobs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("consulta_ingest_jobs", "Ingestion jobs by status", labels=["status"])
        files = GaugeMetricFamily("consulta_ingest_files", f"Files in the last {self.recent_jobs} ingestion jobs, "
                                  "by outcome", labels=["status"])
        try:
            with self.services.db.read() as conn:
                by_status = dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
                rows = conn.execute("SELECT files FROM jobs ORDER BY created_at DESC LIMIT ?",
                                    (self.recent_jobs,)).fetchall()
        except Exception as e:  # noqa: BLE001 - a scrape must not fail because the database is busy
            logger.warning("ingestion metrics unavailable: %s", e)
            return
        for status in JOB_STATUSES:
            jobs.add_metric([status], float(by_status.get(status, 0)))
        outcomes: Counter[str] = Counter()
        for (raw,) in rows:
            for f in json.loads(raw or "[]"):
                outcomes[f.get("status") or "unknown"] += 1
        for status, n in sorted(outcomes.items()):
            files.add_metric([status], float(n))
        yield jobs
        yield files
        store = self.services.store
        try:
            store.ensure_current()
        except Exception:  # noqa: BLE001 - no index yet (or unreadable: /health and the API say why)
            return
        if store.identity is not None:
            chunks = store.chunks()
            yield GaugeMetricFamily("consulta_index_chunks", "Passages in the loaded index", value=float(len(chunks)))
            yield GaugeMetricFamily("consulta_index_documents", "Documents in the loaded index",
                                    value=float(len({c.document_id for c in chunks})))
            yield GaugeMetricFamily("consulta_index_generation", "Index generation loaded",
                                    value=float(store.generation))
