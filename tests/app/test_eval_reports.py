"""GET /v1/eval/reports: the evaluation runs `consulta eval run` left in <data dir>/reports/, for admins."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.api.server import create_app
from app.container import Services
from app.settings import Settings


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    data = tmp_path_factory.mktemp("reports-api")
    services = Services(Settings(data_dir=data, api={"warm_up": False}))
    services.access.create_user("root", "admin", "root-passphrase")
    services.access.create_user("ana", "reader", "ana-passphrase")
    admin_key = services.access.create_api_key("root")
    reader_key = services.access.create_api_key("ana")
    with TestClient(create_app(services)) as c:
        yield c, data, {"Authorization": f"Bearer {admin_key}"}, {"Authorization": f"Bearer {reader_key}"}
    services.close()


def write_run(data, name: str, f1: float, html: bool = True) -> None:
    folder = data / "reports" / name
    folder.mkdir(parents=True)
    summary = {"timestamp": name, "n": 4, "dataset": {"name": "tiny"}, "command": "consulta eval run",
               "configs": [{"name": "default", "settings": {"k": 4}, "metrics": {"answer.f1": f1}}]}
    (folder / "summary.json").write_text(json.dumps(summary))
    if html:
        (folder / "report.html").write_text(f"<html><body><h1>Run {name}</h1></body></html>")


def test_admin_lists_runs_newest_first_and_reads_one(api):
    client, data, admin, _ = api
    assert client.get("/v1/eval/reports", headers=admin).json() == {"reports": []}
    write_run(data, "20261120T090000Z", 0.41)
    write_run(data, "20261123T110000Z", 0.52)
    write_run(data, "20261122T100000Z", 0.47, html=False)
    (data / "reports" / "history.jsonl").write_text("{}\n")

    reports = client.get("/v1/eval/reports", headers=admin).json()["reports"]
    assert [r["id"] for r in reports] == ["20261123T110000Z", "20261122T100000Z", "20261120T090000Z"]
    assert reports[0]["dataset"] == "tiny" and reports[0]["configs"][0]["metrics"] == {"answer.f1": 0.52}
    assert [r["has_html"] for r in reports] == [True, False, True]

    page = client.get("/v1/eval/reports/20261123T110000Z", headers=admin)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Run 20261123T110000Z" in page.text
    assert client.get("/v1/eval/reports/20261122T100000Z", headers=admin).status_code == 404


def test_readers_and_path_tricks_get_nothing(api):
    client, data, admin, reader = api
    (data / "secret.html").write_text("secret")
    assert client.get("/v1/eval/reports", headers=reader).status_code == 403
    assert client.get("/v1/eval/reports").status_code == 401
    for bad in ("..", "..%2Fsecret.html", "%2E%2E", ".hidden"):
        r = client.get(f"/v1/eval/reports/{bad}", headers=admin)
        assert r.status_code == 404 and "secret" not in r.text, bad
