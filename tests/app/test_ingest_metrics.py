"""/metrics covers ingestion: jobs by status, files by outcome, and what the index holds."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.server import create_app
from app.container import Services
from app.settings import Settings


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return s.value
    return None


def test_metrics_count_ingestion_jobs_files_and_indexed_documents(tmp_path):
    services = Services(Settings(data_dir=tmp_path / "data", api={"warm_up": False}))
    good = tmp_path / "leave.md"
    good.write_text("# Leave\n\nStaff get 25 days of annual leave.\n", encoding="utf-8")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7 this is not really a PDF")
    with TestClient(create_app(services)) as client:
        before = client.get("/metrics").text
        assert value(before, "consulta_ingest_jobs", status="done") == 0
        assert value(before, "consulta_index_chunks") is None  # nothing ingested yet
        job = services.jobs.submit("hr", [good, broken], user_id=None)
        assert services.jobs.wait(job["job_id"], timeout=300)["status"] == "done"
        after = client.get("/metrics").text
    services.close()
    assert value(after, "consulta_ingest_jobs", status="done") == 1
    assert value(after, "consulta_ingest_files", status="ingested") == 1
    assert value(after, "consulta_ingest_files", status="failed") == 1
    assert value(after, "consulta_index_documents") == 1
    assert value(after, "consulta_index_chunks") >= 1
