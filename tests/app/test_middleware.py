"""Request ids, structured request logs without secrets, and per-caller rate limits, through the real app."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from app.api.middleware import JsonLogFormatter, RateLimiter
from app.api.server import create_app
from app.container import Services
from app.settings import Settings


@pytest.fixture()
def client(tmp_path):
    settings = Settings(data_dir=tmp_path, api={"warm_up": False, "rate_limit_per_minute": 8})
    services = Services(settings)
    with TestClient(create_app(services)) as c:
        yield c
    services.close()


def test_a_caller_over_its_limit_gets_429_with_retry_after_and_others_are_unaffected(client):
    alice = {"Authorization": "Bearer alice-key"}
    # 8 a minute allows a burst of 2, then about one request every 7.5 s
    first = [client.get("/v1/collections", headers=alice) for _ in range(2)]
    assert all(r.status_code != 429 for r in first), [r.status_code for r in first]
    limited = [r for r in (client.get("/v1/collections", headers=alice) for _ in range(3)) if r.status_code == 429]
    assert len(limited) == 3
    r = limited[0]
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limited"
    assert "rate_limit_per_minute" in r.json()["error"]["message"]
    # another key has its own bucket; health probes are never limited
    assert client.get("/v1/collections", headers={"Authorization": "Bearer bob-key"}).status_code != 429
    assert all(client.get("/health").status_code != 429 for _ in range(20))


def test_every_response_carries_a_request_id_and_a_sane_given_one_is_kept(client):
    r = client.get("/health")
    assert len(r.headers["x-request-id"]) >= 8
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    evil = client.get("/health", headers={"X-Request-ID": "x\" injected"}).headers["x-request-id"]
    assert evil != "x\" injected"


def test_request_log_lines_are_json_with_the_id_and_never_the_credential(client, caplog):
    caplog.set_level(logging.INFO, logger="consulta.access")
    client.get("/v1/collections?api_key=leaky", headers={"Authorization": "Bearer s3cret-token",
                                                          "X-Request-ID": "req-42"})
    records = [r for r in caplog.records if r.name == "consulta.access"]
    assert records
    line = JsonLogFormatter().format(records[-1])
    event = json.loads(line)
    assert event["path"] == "/v1/collections" and event["method"] == "GET"
    assert event["caller"].startswith("key:") and isinstance(event["duration_ms"], float)
    assert "s3cret" not in line and "leaky" not in line


def test_the_bucket_refills_with_time():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert limiter.take("a") == 0 and limiter.take("a") == 0
    wait = limiter.take("a")
    assert 0 < wait <= 1.0
    now[0] += 1.0
    assert limiter.take("a") == 0
