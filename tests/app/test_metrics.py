"""The app's engine surfaces: the OpenAI-compatible routes behind sign-in, and Prometheus /metrics."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.server import create_app
from app.container import Services
from app.settings import Settings
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def app_and_key(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("metrics"), api={"warm_up": False},
                        serving={"model": TINY_MODEL, "n_ctx": 2048, "max_sequences": 2, "max_tokens": 16,
                                 "n_threads": 2})
    services = Services(settings)
    services.access.create_user("reader", "reader", "reader-passphrase")
    key = services.access.create_api_key("reader")
    with TestClient(create_app(services)) as client:
        yield client, {"Authorization": f"Bearer {key}"}
    services.close()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def find(metrics: dict, name: str, **labels: str) -> float | None:
    for (n, ls), value in metrics.items():
        if n == name and set(labels.items()) <= set(ls):
            return value
    return None


def test_openai_routes_need_a_key_and_do_not_clash_with_the_app(app_and_key):
    client, auth = app_and_key
    body = {"model": "any", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 8,
            "temperature": 0}
    assert client.post("/v1/chat/completions", json=body).status_code == 401
    r = client.post("/v1/chat/completions", json=body, headers=auth)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]
    assert reply["usage"]["completion_tokens"] > 0 and reply["timings"]["ttft_ms"] > 0
    assert client.get("/v1/models", headers=auth).json()["data"][0]["id"].startswith("SmolLM2")
    assert client.post("/v1/search", json={"query": "x"}).status_code == 401  # the app's own /v1 routes stay


def test_metrics_report_engine_latencies_kv_and_requests(app_and_key):
    client, auth = app_and_key
    r = client.post("/v1/completions", json={"prompt": "One, two, three,", "max_tokens": 6, "temperature": 0},
                    headers=auth)
    assert r.status_code == 200, r.text
    scrape = client.get("/metrics")  # open, like /health
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    m = samples(scrape.text)
    assert find(m, "consulta_engine_time_to_first_token_seconds_count") >= 1
    assert find(m, "consulta_engine_time_per_output_token_seconds_count") >= 1
    assert find(m, "consulta_engine_queue_time_seconds_count") >= 1
    assert find(m, "consulta_engine_generated_tokens_total") >= 6
    assert find(m, "consulta_engine_requests_running") == 0 and find(m, "consulta_engine_requests_waiting") == 0
    assert find(m, "consulta_engine_kv_cells_used") == 0 and find(m, "consulta_engine_kv_cells_total") >= 2048
    assert find(m, "consulta_engine_slots") == 2
    assert find(m, "consulta_engine_gpu_offload") == 0  # the CPU build, no layers asked for
    assert find(m, "consulta_http_requests_total", route="/v1/completions", status="200") == 1
    assert find(m, "consulta_http_request_duration_seconds_count", route="/v1/completions") == 1
    assert find(m, "consulta_engine_requests_finished_total", reason="length") >= 1
