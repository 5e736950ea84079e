"""The API fuzzed against its own OpenAPI schema (schemathesis), over HTTP, signed in as an admin: no 5xx answers,
whatever the input.

Two passes: every operation that does not generate text, with all of schemathesis's phases (examples, coverage,
fuzzing, stateful); then the three that generate (/v1/ask, /v1/chat/completions, /v1/completions) with fewer
cases and answers capped at a few tokens (tests/deploy/fuzz_hooks.py), since each case costs a model call on CPU.
Left out: revoking keys and logging out, which would end the fuzzer's own session. The admin has a name no
schema example uses, so generated user edits cannot lock it out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.deploy.test_kill9 import start_server

pytestmark = pytest.mark.slow
GENERATING = "^/v1/(ask|chat/completions|completions)$"


def schemathesis(url: str, key: str, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "schemathesis"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SCHEMATHESIS_HOOKS": "tests.deploy.fuzz_hooks"}
    return subprocess.run([str(exe), "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
                           "--header", f"Authorization: Bearer {key}", "--seed", "7", "--request-timeout", "300",
                           "--continue-on-failure", "--no-color", *args],
                          capture_output=True, text=True, timeout=1200, env=env, cwd=REPO)


def test_no_input_makes_the_api_answer_5xx(base_env, corpus_dir, tmp_path):
    env = {**base_env, "CONSULTA_DATA_DIR": str(tmp_path / "data"), "CONSULTA_SERVING__MAX_TOKENS": "8",
           "CONSULTA_API__RATE_LIMIT_PER_MINUTE": "0"}
    assert run_cli(["ingest", str(corpus_dir), "--collection", "demo"], env).returncode == 0
    r = run_cli(["users", "create-admin", "--username", "fz-root-7", "--json"], env)
    key = json.loads(r.stdout)["api_key"]
    log = tmp_path / "api.log"
    proc, url = start_server(env, log)
    try:
        # the generating operations first: the stateful phase of the other pass may disable the admin itself
        # (it follows links from /v1/auth/me to PATCH /v1/users/{username}), which is allowed and not a 5xx
        runs = [schemathesis(url, key, "--max-examples", "3", "--include-path-regex", GENERATING,
                             "--phases", "examples,fuzzing"),
                schemathesis(url, key, "--max-examples", "10", "--exclude-path-regex",
                             f"^/v1/(keys|auth/logout)|{GENERATING}")]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for r in runs:
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-6000:] + "\n--- server log ---\n" + log.read_text()[-4000:]
        assert "generated" in out, out[-3000:]
    assert "Authentication failed" not in runs[0].stdout, runs[0].stdout[-3000:]
