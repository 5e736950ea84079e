"""Engine metrics kept by the engine itself: counters, recent means and cumulative latency histograms, cheap to
snapshot.

The decode thread observes; anyone may snapshot (a Prometheus collector, a /health probe). The
bucket bounds suit interactive generation on CPU and GPU alike, in seconds as Prometheus expects.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.generator import Completion

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_GAP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)


class LatencyHistogram:
    """Counts per bucket (non-cumulative inside, cumulative in `snapshot`), their sum and count."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.buckets = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, seconds)] += 1
            self._sum += seconds

    def snapshot(self) -> dict:
        """{"buckets": [[upper bound, cumulative count], ..., ["+Inf", count]], "sum": s, "count": n}."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, n in zip((*self.buckets, "+Inf"), counts):
            running += n
            cumulative.append([bound, running])
        return {"buckets": cumulative, "sum": total, "count": running}


class EngineMetrics:
    """What `BatchingEngine.stats()` reports: written by the decode thread (requests_total by submitters, under
    the engine's queue lock), read from any thread."""

    def __init__(self) -> None:
        self.requests_total = 0
        self.tokens_generated_total = 0
        self.prompt_tokens_total = 0
        self.prompt_tokens_reused_total = 0  # KV copied from a shared prefix
        self.finished_total: dict[str, int] = {}
        self.kv_cells_used = 0  # from llama_memory_seq_pos_max, after each step
        self.steps_total = 0
        self.decode_s_total = 0.0  # time inside llama_decode
        self.busy_s_total = 0.0  # time the decode thread spent on steps (decode + Python around it)
        self._recent_ttft: deque[float] = deque(maxlen=256)
        self._recent_tpot: deque[float] = deque(maxlen=256)
        self._throughput_marks: deque[tuple[float, int]] = deque(maxlen=64)  # (time, tokens so far), ~1/s
        self.histograms = {
            "queue_seconds": LatencyHistogram(),  # submit -> slot
            "ttft_seconds": LatencyHistogram(),  # submit -> first token
            "tpot_seconds": LatencyHistogram(TOKEN_GAP_BUCKETS_S),  # mean gap between later tokens, per request
            "e2e_seconds": LatencyHistogram(),  # submit -> finished
        }

    def count_finished(self, reason: str) -> None:
        self.finished_total[reason] = self.finished_total.get(reason, 0) + 1

    def observe_completed(self, c: Completion) -> None:
        """The latencies of a request that generated to its end ("stop" or "length")."""
        self.histograms["queue_seconds"].observe(c.queue_ms / 1000.0)
        self.histograms["e2e_seconds"].observe(c.total_ms / 1000.0)
        if c.ttft_ms is not None:
            self._recent_ttft.append(c.ttft_ms)
            self.histograms["ttft_seconds"].observe(c.ttft_ms / 1000.0)
        if c.tpot_ms is not None:
            self._recent_tpot.append(c.tpot_ms)
            self.histograms["tpot_seconds"].observe(c.tpot_ms / 1000.0)

    def mark_throughput(self) -> None:
        """Note the tokens generated so far, about once a second (for `tokens_per_s_recent`)."""
        now = time.perf_counter()
        marks = self._throughput_marks
        if not marks or now - marks[-1][0] >= 1.0:
            marks.append((now, self.tokens_generated_total))

    def recent_rate(self, window_s: float = 10.0) -> float:
        """Generated tokens per second over about the last `window_s` seconds."""
        now, total = time.perf_counter(), self.tokens_generated_total
        marks = [m for m in list(self._throughput_marks) if now - m[0] <= window_s]
        if not marks or now <= marks[0][0]:
            return 0.0
        return round((total - marks[0][1]) / (now - marks[0][0]), 2)

    def snapshot(self, kv_cells_total: int) -> dict[str, Any]:
        """The counters, means and histograms, in the order `stats()` has always listed them."""
        def mean(xs: list[float]) -> float | None:
            return round(sum(xs) / len(xs), 3) if xs else None

        return {
            "requests_total": self.requests_total,
            "requests_finished": dict(self.finished_total),
            "tokens_generated_total": self.tokens_generated_total,
            "prompt_tokens_total": self.prompt_tokens_total,
            "prompt_tokens_reused_total": self.prompt_tokens_reused_total,
            "steps_total": self.steps_total,
            "decode_s_total": round(self.decode_s_total, 3),
            "busy_s_total": round(self.busy_s_total, 3),
            "kv_cells_used": self.kv_cells_used,
            "kv_cells_total": kv_cells_total,
            "ttft_ms_mean": mean(list(self._recent_ttft)),
            "tpot_ms_mean": mean(list(self._recent_tpot)),
            "tokens_per_s_recent": self.recent_rate(),
            "histograms": {name: h.snapshot() for name, h in self.histograms.items()},  # finished requests
        }
