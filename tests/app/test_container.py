"""The composition root builds each component once, even when the API's warm-up thread and requests ask at once."""

from __future__ import annotations

import threading
import time

from app.container import Services
from app.settings import DEFAULT_MIN_SCORE, Settings


def test_a_component_asked_for_by_many_threads_at_once_is_built_once(tmp_path, monkeypatch):
    builds = []

    def slow_database(self):
        builds.append(threading.get_ident())
        time.sleep(0.2)  # long enough for every thread to arrive while the first one builds
        return object()

    monkeypatch.setattr(Services.db, "build", slow_database)
    services = Services(Settings(data_dir=tmp_path))
    got = []
    threads = [threading.Thread(target=lambda: got.append(services.db)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(got) == 8 and all(g is got[0] for g in got)


def test_the_refusal_threshold_defaults_by_embedder_and_a_set_value_wins(tmp_path):
    assert Settings(data_dir=tmp_path).retrieval.effective_min_score() == DEFAULT_MIN_SCORE["e5"] == 0.79
    assert Settings(retrieval={"embedder": "use"}).retrieval.effective_min_score() == 0.20
    assert Settings(retrieval={"embedder": "minilm", "min_score": 0.5}).retrieval.effective_min_score() == 0.5


def test_the_rerank_engine_keeps_its_sizes_as_settings():
    r = Settings().retrieval
    assert (r.rerank_n_ctx, r.rerank_max_sequences) == (4096, 4)
