"""`kill -9` of the API server in the middle of an ingestion job and in the middle of a streamed answer; then a
restart. The index and the database must be consistent, and the interrupted job clearly marked failed."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port, make_pdf, run_cli

pytestmark = pytest.mark.slow


def start_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "consulta", "serve", "--port", str(port)], env=env, cwd=REPO,
                            stdout=open(log, "a"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail("the server did not come up within 180 s")


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def assert_consistent(url: str, headers: dict[str, str], db: Path) -> dict:
    """Health answers, the chunk count agrees with the document list, search works, SQLite is intact."""
    health = httpx.get(f"{url}/health", headers=headers, timeout=30).json()
    docs = httpx.get(f"{url}/v1/documents", headers=headers, timeout=30).json()["documents"]
    assert sum(d["chunks"] for d in docs) == health["index_chunks"], (health, docs)
    r = httpx.post(f"{url}/v1/search", json={"query": "annual leave days", "k": 2}, headers=headers, timeout=60)
    assert r.status_code == 200 and r.json()["hits"], r.text
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return health


@pytest.fixture()
def server_env(base_env, corpus_dir, tmp_path):
    env = {**base_env, "CONSULTA_DATA_DIR": str(tmp_path / "data"), "CONSULTA_SERVING__MAX_TOKENS": "200"}
    r = run_cli(["ingest", str(corpus_dir), "--collection", "demo", "--json"], env)
    assert r.returncode == 0, r.stderr
    r = run_cli(["users", "create-admin", "--json"], env)
    assert r.returncode == 0, r.stderr
    return env, {"Authorization": f"Bearer {json.loads(r.stdout)['api_key']}"}


def test_kill_during_an_ingestion_job_then_restart(server_env, tmp_path):
    env, headers = server_env
    db = Path(env["CONSULTA_DATA_DIR"]) / "consulta.db"
    log = tmp_path / "api.log"
    proc, url = start_server(env, log)
    before = assert_consistent(url, headers, db)

    files = []
    for i in range(12):
        pages = [f"Section {i}.{p}: the archive keeps record series {i}-{p} for {p + 3} years. " * 12
                 for p in range(6)]
        files.append(make_pdf(tmp_path / f"records-{i:02d}.pdf", pages, title=f"Records {i}"))
    form = [("files", (p.name, p.read_bytes(), "application/pdf")) for p in files]
    r = httpx.post(f"{url}/v1/documents", files=form, data={"collection": "demo"}, headers=headers, timeout=60)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()["status"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    kill9(proc)  # mid-job: the job was running

    proc, url = start_server(env, log)
    try:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] != "done":  # it may have finished in the instant before the kill
            assert job["status"] == "failed" and "interrupted" in job["error"], job
        after = assert_consistent(url, headers, db)
        assert after["index_chunks"] >= before["index_chunks"]
        # the files can be sent again and all of them end up searchable
        r = httpx.post(f"{url}/v1/documents?wait=true", files=form, data={"collection": "demo"}, headers=headers,
                       timeout=900)
        assert r.status_code in (200, 202) and r.json()["status"] == "done", r.text
        docs = httpx.get(f"{url}/v1/documents", headers=headers).json()["documents"]
        assert {Path(d["source"]).name for d in docs} >= {p.name for p in files}
        assert_consistent(url, headers, db)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_kill_during_a_streamed_answer_then_restart(server_env, tmp_path):
    env, headers = server_env
    db = Path(env["CONSULTA_DATA_DIR"]) / "consulta.db"
    log = tmp_path / "api.log"
    proc, url = start_server(env, log)
    got_token = False
    with httpx.stream("POST", f"{url}/v1/ask", json={"question": "How many days of annual leave do staff get?",
                                                      "stream": True}, headers=headers, timeout=300) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line == "event: token":
                got_token = True
                kill9(proc)  # mid-answer
                break
    assert got_token
    proc, url = start_server(env, log)
    try:
        assert_consistent(url, headers, db)
        assert httpx.get(f"{url}/v1/conversations", headers=headers).status_code == 200
        r = httpx.post(f"{url}/v1/ask", json={"question": "How many days of annual leave do staff get?"},
                       headers=headers, timeout=300)
        assert r.status_code == 200 and r.json()["answer"], r.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
