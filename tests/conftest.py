"""Shared fixtures: real bundled models, a real index on disk, a real API process over HTTP.

Heavy things (the embedder, the tiny GGUF, the API process) are built once per session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_MODEL = "smollm2-135m"  # mechanics only; answers are not meant to be good
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-passphrase-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pdf(path: Path, pages: list[str], title: str = "Staff handbook") -> Path:
    """A real PDF with one text page per entry (fpdf2), written by the test itself."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


HANDBOOK_PAGES = [
    "Staff handbook. Chapter 1: Working hours. The office opens at 8:00 and closes at 18:00 from Monday "
    "to Friday. Staff may work from home two days per week after agreeing it with their manager.",
    "Chapter 2: Expenses. Travel expenses are reimbursed within 30 days when the receipt is uploaded to the "
    "finance portal. Meals abroad are covered up to 45 euros per day.",
]

CONSULTA_MD = """# About Consulta

Consulta is a local, private assistant that answers staff questions about their organisation's own
documents, citing the page each answer came from.

## Privacy

No document, question or answer leaves the organisation's machines.
"""


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    (d / "consulta.md").write_text(CONSULTA_MD, encoding="utf-8")
    make_pdf(d / "handbook.pdf", HANDBOOK_PAGES)
    return d


@pytest.fixture(scope="session")
def base_env(tmp_path_factory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("data")
    return {**os.environ, "CONSULTA_DATA_DIR": str(data), "CONSULTA_SERVING__MODEL": TINY_MODEL,
            "CONSULTA_SERVING__N_CTX": "4096", "CONSULTA_SERVING__MAX_SEQUENCES": "2",
            "CONSULTA_SERVING__MAX_TOKENS": "48", "CONSULTA_SERVING__N_THREADS": "2",
            "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "consulta", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def api_env(base_env, tmp_path_factory) -> dict[str, str]:
    """The environment of the `api_server` process (its own data dir)."""
    return {**base_env, "CONSULTA_DATA_DIR": str(tmp_path_factory.mktemp("api-data")),
            "CONSULTA_API__MAX_UPLOAD_MB": "1"}


@pytest.fixture(scope="session")
def api_admin_key(api_env) -> str:
    """An API key of the admin (ADMIN_USER / ADMIN_PASSWORD) of the `api_server`, made by the CLI."""
    r = run_cli(["users", "create-admin", "--username", ADMIN_USER, "--password", ADMIN_PASSWORD, "--json"], api_env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["api_key"]


@pytest.fixture(scope="session")
def api_server(api_env, api_admin_key, corpus_dir, tmp_path_factory):
    """Base URL of a real `consulta serve` process with the demo corpus ingested into collection 'demo';
    its admin is ADMIN_USER / ADMIN_PASSWORD (API key: the `api_admin_key` fixture)."""
    env = api_env
    r = run_cli(["ingest", str(corpus_dir), "--collection", "demo", "--json"], env)
    assert r.returncode == 0, r.stderr
    port = free_port()
    log = open(tmp_path_factory.mktemp("api-log") / "api.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "consulta", "serve", "--port", str(port)], env=env, cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"consulta serve exited early:\n{log.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("consulta serve did not answer /health within 180 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def embedder():
    """The default embedder from the settings, loaded once."""
    from app.container import Services
    from app.settings import Settings

    e = Services(Settings()).embedder
    e.warm_up()
    return e
