"""Queries keep working, and see each new document once it is published, while ingestion runs in the same process
(the API's ingestion jobs run beside its queries)."""

from __future__ import annotations

import threading

from app.container import Services
from app.settings import Settings
from retrieval.types import SearchFilter


def test_searches_during_ingestion_never_fail_and_find_every_new_document(tmp_path):
    services = Services(Settings(data_dir=tmp_path / "data"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "seed.md").write_text("# Seed\n\nThe canteen opens at eight.\n", encoding="utf-8")
    services.pipeline.ingest([docs / "seed.md"], "c")
    codes = [f"permit {1000 + i}-X{i}" for i in range(10)]
    for i, code in enumerate(codes):
        (docs / f"p{i}.md").write_text(f"# Permit {i}\n\nStaff file {code} with the facilities office.\n",
                                       encoding="utf-8")

    errors: list[BaseException] = []
    searches = 0
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(len(codes)):
                services.pipeline.ingest([docs / f"p{i}.md"], "c")
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)
        finally:
            done.set()

    def reader() -> None:
        nonlocal searches
        while not done.is_set():
            try:
                services.retriever.retrieve("which permit do staff file", 3, SearchFilter(collections=("c",)))
                searches += 1
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                return

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, repr(errors[0])
    assert searches > 0
    for i, code in enumerate(codes):
        hits = services.retriever.retrieve(code, 2, SearchFilter(collections=("c",)))
        assert hits and hits[0].chunk.meta["source"].endswith(f"p{i}.md"), (code,
                                                                            [h.chunk.meta["source"] for h in hits])
    services.close()
