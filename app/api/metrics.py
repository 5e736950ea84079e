"""Prometheus metrics: GET /metrics, for the API's requests and the generation engine.

`install_metrics(app, services)` gives the app a registry of its own (no process-wide globals: two
apps in one process, as in tests, do not share counters), a middleware that counts and times every
HTTP request by route template, and a collector that reads the engine's `stats()` at scrape time:

- consulta_http_requests_total{method,route,status}, consulta_http_request_duration_seconds{method,route}
  (for a streamed answer: until the last byte);
- consulta_engine_time_to_first_token_seconds, _time_per_output_token_seconds, _queue_time_seconds,
  _request_duration_seconds (histograms over finished requests);
- consulta_engine_requests_running / _waiting / _slots, _kv_cells_used / _kv_cells_total / _kv_usage_ratio,
  _tokens_per_second (over the last seconds), counters _generated_tokens_total, _prompt_tokens_total,
  _requests_total, _requests_finished_total{reason}, _decode_steps_total.

Engine figures appear once the model is loaded; a remote generator has none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.container import Services

ENGINE_HISTOGRAMS = {
    "ttft_seconds": ("time_to_first_token_seconds", "Submit to first generated token"),
    "tpot_seconds": ("time_per_output_token_seconds", "Mean gap between generated tokens after the first"),
    "queue_seconds": ("queue_time_seconds", "Submit to getting a decode slot"),
    "e2e_seconds": ("request_duration_seconds", "Submit to the last generated token"),
}


class EngineCollector(Collector):
    """Reads the generator's `stats()` when Prometheus scrapes; nothing while the model is not loaded."""

    def __init__(self, services: Services, prefix: str = "consulta_engine") -> None:
        self._services = services
        self._prefix = prefix

    def collect(self) -> Iterator[Any]:
        services = self._services
        if not getattr(services, "generator_loaded", False):
            return
        stats_of = getattr(services.generator, "stats", None)
        if stats_of is None:
            return
        stats = stats_of()
        p = self._prefix
        labels = ["model"]
        model = [str(stats.get("model", ""))]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily | None:
            if value is None:
                return None
            g = GaugeMetricFamily(f"{p}_{name}", doc, labels=labels)
            g.add_metric(model, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(f"{p}_{name}", doc, labels=labels)
            c.add_metric(model, value)
            return c

        total = stats.get("kv_cells_total") or 0
        families: list[Any] = [
            gauge("requests_running", "Requests holding a decode slot", stats["running"]),
            gauge("requests_waiting", "Requests queued for a slot", stats["waiting"]),
            gauge("slots", "Decode slots (sequences decoded together)", stats["slots"]),
            gauge("gpu_offload", "1 when the model's layers run on a GPU", None if stats.get("gpu_offload") is None
                  else float(stats["gpu_offload"])),
            gauge("kv_cells_used", "KV cache cells in use", stats["kv_cells_used"]),
            gauge("kv_cells_total", "KV cache cells", total),
            gauge("kv_usage_ratio", "Share of the KV cache in use", stats["kv_cells_used"] / total if total else 0.0),
            gauge("tokens_per_second", "Generated tokens per second over the last seconds",
                  stats.get("tokens_per_s_recent")),
            counter("generated_tokens", "Tokens generated", stats["tokens_generated_total"]),
            counter("prompt_tokens", "Prompt tokens read", stats["prompt_tokens_total"]),
            counter("requests", "Requests accepted", stats["requests_total"]),
            counter("decode_steps", "llama_decode calls", stats["steps_total"]),
        ]
        finished = CounterMetricFamily(f"{p}_requests_finished", "Requests finished, by how they ended",
                                       labels=[*labels, "reason"])
        for reason, n in sorted(stats["requests_finished"].items()):
            finished.add_metric([*model, reason], n)
        families.append(finished)
        for key, (name, doc) in ENGINE_HISTOGRAMS.items():
            h = stats.get("histograms", {}).get(key)
            if h is None:
                continue
            family = HistogramMetricFamily(f"{p}_{name}", doc, labels=labels)
            family.add_metric(model, [(_le(b), n) for b, n in h["buckets"]], h["sum"])
            families.append(family)
        yield from (f for f in families if f is not None)


def _le(bound: float | str) -> str:
    return bound if isinstance(bound, str) else repr(float(bound))


class HttpMetricsMiddleware:
    """Counts and times every HTTP request, labelled by route template (`/v1/documents/{document_id}`)."""

    def __init__(self, app: Any, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self._requests = requests
        self._latency = latency

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"  # raw paths would let callers mint labels
            method = scope.get("method", "")
            self._requests.labels(method, path, str(status)).inc()
            self._latency.labels(method, path).observe(time.perf_counter() - started)


def install_metrics(app: FastAPI, services: Services) -> CollectorRegistry:
    """Add GET /metrics, the request middleware and the engine collector to `app`; returns the registry."""
    registry = CollectorRegistry()
    requests = Counter("consulta_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("consulta_http_request_duration_seconds", "HTTP request time, streamed bodies included",
                        ["method", "route"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
    registry.register(EngineCollector(services))
    from app.api.ingest_metrics import IngestCollector

    registry.register(IngestCollector(services))
    app.add_middleware(HttpMetricsMiddleware, requests=requests, latency=latency)

    router = APIRouter(tags=["system"])

    @router.get("/metrics", summary="Prometheus metrics (text exposition format)", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
    app.state.metrics_registry = registry
    return registry
