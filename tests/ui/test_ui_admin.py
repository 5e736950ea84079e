"""The admin page's engine health, read from Prometheus text as the API's /metrics writes it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ui.admin import engine_health


class Engine:
    """Families named and shaped as app/api/metrics.py's EngineCollector yields them."""

    def collect(self):
        for name, value in [("requests_waiting", 3), ("requests_running", 2), ("tokens_per_second", 41.5),
                            ("kv_usage_ratio", 0.25)]:  # fmt: skip
            g = GaugeMetricFamily(f"consulta_engine_{name}", name, labels=["model"])
            g.add_metric(["qwen"], value)
            yield g
        c = CounterMetricFamily("consulta_engine_requests", "Requests accepted", labels=["model"])
        c.add_metric(["qwen"], 10)
        yield c
        h = HistogramMetricFamily("consulta_engine_time_to_first_token_seconds", "ttft", labels=["model"])
        # 10 requests: 4 under 0.5 s, 8 under 1 s, all under 2.5 s; 9 s in all
        h.add_metric(["qwen"], [("0.5", 4), ("1.0", 8), ("2.5", 10), ("+Inf", 10)], 9.0)
        yield h


def test_engine_health_reads_queue_throughput_and_time_to_first_token():
    registry = CollectorRegistry()
    registry.register(Engine())
    h = engine_health(generate_latest(registry).decode())
    assert (h.waiting, h.running, h.tokens_per_s, h.kv_usage, h.requests) == (3, 2, 41.5, 0.25, 10)
    assert h.ttft_mean_s == 0.9
    assert 0.5 < h.ttft_p50_s < 1.0  # the 5th of 10 lies in the (0.5, 1.0] bucket


def test_engine_health_is_empty_before_the_model_loads():
    h = engine_health("# HELP consulta_http_requests_total HTTP requests\n"
                      "# TYPE consulta_http_requests_total counter\n")
    assert h.running is None and h.ttft_mean_s is None and h.tokens_per_s is None
