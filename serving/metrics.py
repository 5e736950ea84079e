"""Engine metrics kept by the engine itself: cumulative latency histograms, cheap to snapshot.

The decode thread observes; anyone may snapshot (a Prometheus collector, a /health probe). The
bucket bounds suit interactive generation on CPU and GPU alike, in seconds as Prometheus expects.
"""

from __future__ import annotations

import bisect
import threading

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
