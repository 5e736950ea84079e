"""Fixtures for the UI tests: a real Streamlit server per API, and headless Chromium.

`api_server` (the base URL of a real `consulta serve` with the "demo" collection ingested; its admin
signs in as ADMIN_USER / ADMIN_PASSWORD or uses `api_admin_key`) comes from tests/conftest.py. Chromium is
Debian's (`apt-get install chromium`), never one downloaded by `playwright install`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "ui" / "app.py"
CHROMIUM = os.environ.get("CONSULTA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(api_url: str, log_path: Path) -> Iterator[str]:
    """Run `streamlit run ui/app.py` against `api_url`; yield its URL once it answers."""
    port = free_port()
    env = os.environ | {"CONSULTA_API_URL": api_url, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Streamlit exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Streamlit did not answer in {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def ui_server(api_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The UI, talking to the real API."""
    with streamlit_server(api_server, tmp_path_factory.mktemp("ui") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def ui_server_without_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The UI pointed at a loopback port nothing listens on; yields (UI URL, the dead API URL)."""
    dead_api = f"http://127.0.0.1:{free_port()}"
    with streamlit_server(dead_api, tmp_path_factory.mktemp("ui-down") / "streamlit.log") as url:
        yield url, dead_api


@pytest.fixture(scope="module")  # not session: Playwright's sync API keeps an event loop running in the main
def browser():                   # thread while open, which breaks asyncio.run() in tests of other packages
    if not Path(CHROMIUM).exists():
        pytest.fail(f"No Chromium at {CHROMIUM}: run `apt-get install -y chromium` (or set CONSULTA_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def artifacts(pytestconfig: pytest.Config) -> Path:
    """test-artifacts/ at the repository root (ignored by git): screenshots of each page."""
    path = pytestconfig.rootpath / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@dataclass(frozen=True)
class Reader:
    username: str
    password: str
    readable: str  # the collection they were granted
    unreadable: str  # a collection that exists but that they may not read


@pytest.fixture(scope="session")
def reader(api_server: str, api_admin_key: str, tmp_path_factory: pytest.TempPathFactory) -> Reader:
    """A reader granted 'demo' only, and a collection 'board' they lack (made through the API as the admin)."""
    who = Reader("rita", "rita-passphrase-42", "demo", "board")
    admin = httpx.Client(base_url=api_server, headers={"Authorization": f"Bearer {api_admin_key}"}, timeout=300)
    with admin:
        r = admin.post("/v1/users", json={"username": who.username, "role": "reader", "password": who.password})
        assert r.status_code == 201, r.text
        r = admin.post("/v1/grants", json={"collection": who.readable, "permission": "read", "user": who.username})
        assert r.status_code == 201, r.text
        minutes = b"# Board minutes\n\nThe board approved the new salary scale on Monday.\n"
        note = ("minutes.md", minutes, "text/markdown")
        r = admin.post("/v1/documents", files=[("files", note)], data={"collection": who.unreadable},
                       params={"wait": "true"})
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
    return who
