"""The stores: one contract every store passes (parametrised over the implementations), then what only the FAISS
store promises (BM25 and the approximate index stored with each generation, durability under kill -9)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import pytest

from retrieval.bm25 import Bm25Params
from retrieval.errors import IndexNotFoundError
from retrieval.store import ENGLISH_FIELD, MAIN_FIELD, FaissStore, IndexConfig, IndexIdentity, VectorStore
from retrieval.types import Chunk, SearchFilter, timestamp

DIM = 8
EN_DIM = 4

# Every store implementation, opened on an index folder; a second store (Qdrant, ...) adds itself here and
# passes the same contract.
STORES: dict[str, Callable[..., VectorStore]] = {"faiss": FaissStore}


def _chunk(i: int, collection: str = "a", doc: str | None = None, **meta) -> Chunk:
    return Chunk(f"c{i}", doc or f"d{i}", f"text {i}", 0, 6, {"source": f"/s/{doc or i}", "collection": collection,
                                                             "language": "en", **meta})


def _vec(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _en_vec(i: int) -> np.ndarray:
    v = np.random.default_rng(1000 + i).standard_normal(EN_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _main(ids) -> dict[str, np.ndarray]:
    return {MAIN_FIELD: np.vstack([_vec(i) for i in ids])}


@pytest.fixture(params=sorted(STORES))
def open_store(request, tmp_path) -> Callable[[], VectorStore]:
    """Opens the store under test on one index, a new instance each call, as another process would."""
    make = STORES[request.param]
    return lambda: make(tmp_path / "index")


def fill(store: VectorStore, n: int = 20, collections=("a", "b")) -> VectorStore:
    with store.writer(IndexIdentity("test-emb", DIM)) as w:
        w.add([_chunk(i, collections[i % len(collections)]) for i in range(n)], _main(range(n)))
    return store


def current(open_store) -> VectorStore:
    """A fresh reader of the published index."""
    return open_store().ensure_current()


# ---- the contract ---------------------------------------------------------------------------------------------
def test_search_finds_the_nearest_first(open_store):
    store = fill(open_store())
    hits = store.search(_vec(3), 3)
    assert hits[0].chunk.id == "c3" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_filter_is_applied_inside_the_search(open_store):
    store = fill(open_store(), n=40, collections=("a", "b", "b", "b", "b", "b", "b", "b"))
    hits = store.search(_vec(1), 5, SearchFilter(collections=("a",)))
    assert len(hits) == 5, "k hits come back when k matching chunks exist"
    assert all(h.chunk.collection == "a" for h in hits)
    assert store.search(_vec(1), 5, SearchFilter(collections=("zzz",))) == []


def test_every_filter_returns_k_hits_even_when_the_matches_rank_last(open_store):
    """300 chunks; the 6 that pass each filter are the ones least like the query, yet all 5 asked for come back."""
    query = _vec(0)
    n = 300
    vecs = np.vstack([_vec(i) for i in range(n)])
    far = set(np.argsort(vecs @ query)[:6].tolist())  # the 6 chunks ranked last for the query
    chunks = []
    for i in range(n):
        odd = i in far
        chunks.append(_chunk(i, "rare" if odd else "common", doc=f"doc{i}",
                             language="ca" if odd else "en", section="Chapter 9: Expenses" if odd else "Intro",
                             modified_at="2021-03-0%dT10:00:00+00:00" % (1 + i % 6) if odd else
                             "2024-06-01T10:00:00+00:00"))
    with open_store().writer(IndexIdentity("test-emb", DIM)) as w:
        w.add(chunks, {MAIN_FIELD: vecs})
    store = current(open_store)
    assert {h.chunk.id for h in store.search(query, 20)}.isdisjoint({f"c{i}" for i in far}), "precondition"
    filters = [SearchFilter(collections=("rare",)), SearchFilter(sources=tuple(f"/s/doc{i}" for i in far)),
               SearchFilter(languages=("ca",)), SearchFilter(sections=("expenses",)),
               SearchFilter(modified_after=timestamp("2021-01-01"), modified_before=timestamp("2021-12-31"))]
    for f in filters:
        hits = store.search(query, 5, f)
        assert len(hits) == 5 and {h.chunk.id for h in hits} <= {f"c{i}" for i in far}, f
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        sparse = store.search_sparse("text", 5, f)
        assert len(sparse) == 5 and {h.chunk.id for h in sparse} <= {f"c{i}" for i in far}, f
    assert store.search(query, 5, SearchFilter(collections=("rare",), languages=("en",))) == [], "AND of fields"
    assert store.search(query, 5, SearchFilter(modified_before=timestamp("2020-12-31", end_of_day=True))) == []


def test_delete_documents(open_store):
    store = fill(open_store(), n=10)
    with store.writer(IndexIdentity("test-emb", DIM)) as w:
        assert w.delete_documents(["d3", "d4"]) == 2
    reread = current(open_store)
    assert len(reread) == 8 and "c3" not in {c.id for c in reread.chunks()}
    assert [d["document_id"] for d in reread.documents()].count("d5") == 1


def test_sparse_search_matches_terms_with_filters_inside(open_store):
    store = fill(open_store(), n=40, collections=("a", "b", "b", "b", "b", "b", "b", "b"))
    assert store.search_sparse("text 13", 3)[0].chunk.id == "c13"
    hits = store.search_sparse("text", 5, SearchFilter(collections=("a",)))
    assert len(hits) == 5, "k hits come back when k matching chunks exist"
    assert all(h.chunk.collection == "a" for h in hits)
    assert store.search_sparse("text", 5, SearchFilter(collections=("zzz",))) == []
    assert store.search_sparse("zeppelin", 5) == []


def test_similarities_and_vectors_are_the_stored_ones(open_store):
    store = fill(open_store())
    chunks = [c for c in store.chunks() if c.id in ("c3", "c7")]
    sims = store.similarities(_vec(3), chunks)
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] == pytest.approx(float(_vec(3) @ _vec(7)), abs=1e-5)
    assert np.allclose(store.vectors_of(chunks), np.vstack([_vec(3), _vec(7)]), atol=1e-6)


def test_adding_the_same_chunk_twice_keeps_one(open_store):
    store = fill(open_store(), n=5)
    fill(store, n=5)
    assert len(current(open_store)) == 5


def test_empty_store_says_ingest_first(open_store):
    with pytest.raises(IndexNotFoundError, match="consulta ingest"):
        open_store().ensure_current()


def test_failed_write_publishes_nothing(open_store):
    store = fill(open_store(), n=5)
    with pytest.raises(RuntimeError), store.writer(IndexIdentity("test-emb", DIM)) as w:
        w.delete_documents(["d0", "d1"])
        raise RuntimeError("crash mid-write")
    assert len(current(open_store)) == 5


def test_reader_picks_up_a_new_generation(open_store):
    writer = fill(open_store(), n=5)
    reader = current(open_store)
    generation = reader.generation
    assert reader.search_sparse("text 99", 1)[0].chunk.id != "c99"
    with writer.writer(IndexIdentity("test-emb", DIM)) as w:
        w.add([_chunk(99)], _main([99]))
    assert len(reader.ensure_current()) == 6 and reader.generation > generation
    assert reader.search_sparse("text 99", 1)[0].chunk.id == "c99", "BM25 switches with the vectors"
    assert reader.search(_vec(99), 1)[0].chunk.id == "c99"


def test_english_field_is_published_searched_and_kept_aligned_through_deletes(open_store):
    """A second, English-only ranking: English chunks only, filters inside, rows still right after a delete."""
    langs = ["en", "es", "en", "ca", "en", "en"]
    chunks = [_chunk(i, collection="a" if i < 4 else "b", language=lang) for i, lang in enumerate(langs)]
    english = np.vstack([_en_vec(i) if lang == "en" else np.zeros(EN_DIM, np.float32)
                         for i, lang in enumerate(langs)])
    with open_store().writer(IndexIdentity("test-emb", DIM)) as w:
        w.use_field(ENGLISH_FIELD, "en-emb", EN_DIM)
        w.add(chunks, {**_main(range(6)), ENGLISH_FIELD: english})
    reader = current(open_store)
    assert reader.has_field(ENGLISH_FIELD, "en-emb") and not reader.has_field(ENGLISH_FIELD, "other-model")
    hits = reader.search(_en_vec(2), 10, field=ENGLISH_FIELD)
    assert hits[0].chunk.id == "c2" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert {h.chunk.id for h in hits} == {"c0", "c2", "c4", "c5"}, "Spanish and Catalan chunks never come back"
    assert [h.chunk.id for h in reader.search(_en_vec(2), 5, SearchFilter(collections=("b",)), field=ENGLISH_FIELD)] \
        in (["c4", "c5"], ["c5", "c4"])
    with open_store().writer(IndexIdentity("test-emb", DIM)) as w:
        w.delete_documents(["d0", "d2"])
    reader = current(open_store)
    assert reader.search(_en_vec(5), 1, field=ENGLISH_FIELD)[0].chunk.id == "c5", "vectors stay with their chunks"
    assert {h.chunk.id for h in reader.search(_en_vec(5), 10, field=ENGLISH_FIELD)} == {"c4", "c5"}


def test_an_index_made_without_the_english_field_gets_it_filled_in(open_store):
    with open_store().writer(IndexIdentity("test-emb", DIM)) as w:
        w.add([_chunk(0), _chunk(1, language="es"), _chunk(2)], _main(range(3)))
    reader = current(open_store)
    assert not reader.has_field(ENGLISH_FIELD, "en-emb") and reader.search(_en_vec(0), 3, field=ENGLISH_FIELD) == []
    with open_store().writer(IndexIdentity("test-emb", DIM)) as w:
        w.use_field(ENGLISH_FIELD, "en-emb", EN_DIM)
        assert w.missing(ENGLISH_FIELD) == [0, 2], "only English chunks need the English model"
        w.set_vectors(ENGLISH_FIELD, [0, 2], np.vstack([_en_vec(0), _en_vec(2)]))
        assert w.missing(ENGLISH_FIELD) == []
        w.add([_chunk(3)], _main([3]))  # added without English vectors (the setting was off): missing again
        assert w.missing(ENGLISH_FIELD) == [3]
    reader = current(open_store)
    assert reader.has_field(ENGLISH_FIELD, "en-emb") and len(reader) == 4
    assert reader.search(_en_vec(2), 1, field=ENGLISH_FIELD)[0].chunk.id == "c2"
    assert {h.chunk.id for h in reader.search(_en_vec(2), 10, field=ENGLISH_FIELD)} == {"c0", "c2"}
    with open_store().writer(IndexIdentity("test-emb", DIM)) as w:
        w.use_field(ENGLISH_FIELD, "another-en-emb", EN_DIM)  # a different English model: old vectors not mixed in
        assert w.missing(ENGLISH_FIELD) == [0, 2, 3]


# ---- the FAISS store ------------------------------------------------------------------------------------------
def _faiss_fill(tmp_path, n: int = 20) -> FaissStore:
    store = FaissStore(tmp_path / "index")
    fill(store, n)
    return store


def test_ingest_analyses_only_new_chunks_for_bm25(tmp_path):
    """BM25 is updated in place on ingest and delete; the chunks already indexed are never re-analysed."""
    _faiss_fill(tmp_path, n=50)
    writer = FaissStore(tmp_path / "index")
    with writer.writer(IndexIdentity("test-emb", DIM)) as w:
        w.add([_chunk(i) for i in range(50, 53)], _main(range(50, 53)))
        w.delete_documents(["d7"])
        assert w.bm25.texts_analysed == 3
    reader = FaissStore(tmp_path / "index").load()
    assert reader.search_sparse("text 51", 1)[0].chunk.id == "c51"
    assert "c7" not in {h.chunk.id for h in reader.search_sparse("text 7", 60)}
    assert reader.bm25.texts_analysed == 0, "a reader loads the stored BM25 data"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_above_the_exact_size(tmp_path, kind):
    """Past exact_max the store builds an HNSW or IVF index, stores it, and appends to it on ingest."""
    cfg = IndexConfig(kind="auto" if kind == "hnsw" else "ivf", exact_max=100, ivf_nprobe=64)
    n = 1200
    store = FaissStore(tmp_path / "index", index=cfg)
    with store.writer(IndexIdentity("test-emb", DIM)) as w:
        w.add([_chunk(i) for i in range(n)], _main(range(n)))
    gen = tmp_path / "index" / (tmp_path / "index" / "CURRENT").read_text()
    assert (gen / "ann.faiss").is_file()
    reader = FaissStore(tmp_path / "index", index=cfg).load()
    assert reader.index_kind == kind
    found = sum(reader.search(_vec(i), 1)[0].chunk.id == f"c{i}" for i in range(0, n, 40))
    assert found >= 28, f"{kind}: a stored vector finds itself ({found}/30)"
    with store.writer(IndexIdentity("test-emb", DIM)) as w:
        w.add([_chunk(5000)], _main([5000]))
    assert reader.refresh() and reader.search(_vec(5000), 1)[0].chunk.id == "c5000"
    assert FaissStore(tmp_path / "index").load().index_kind == "flat", "small corpora search exactly"


def test_bm25_is_written_with_the_generation_not_rebuilt_by_readers(tmp_path, caplog):
    _faiss_fill(tmp_path, n=10)
    current_name = (tmp_path / "index" / "CURRENT").read_text()
    assert (tmp_path / "index" / current_name / "bm25").is_dir()
    with caplog.at_level("INFO", logger="retrieval.sparse"):
        reader = FaissStore(tmp_path / "index").load()
        assert reader.search_sparse("text 4", 1)[0].chunk.id == "c4"
    assert "built BM25" not in caplog.text


def test_generation_without_bm25_is_still_searchable_and_next_write_stores_it(tmp_path, caplog):
    """An index written before BM25 existed: BM25 is built in memory on load, and stored by the next write."""
    store = _faiss_fill(tmp_path, n=10)
    gen = tmp_path / "index" / (tmp_path / "index" / "CURRENT").read_text()
    shutil.rmtree(gen / "bm25")
    with caplog.at_level("INFO", logger="retrieval.sparse"):
        reader = FaissStore(tmp_path / "index").load()
        assert reader.search_sparse("text 4", 1)[0].chunk.id == "c4"
    assert "built BM25" in caplog.text
    with store.writer(IndexIdentity("test-emb", DIM)) as w:
        w.delete_documents(["d4"])
    gen = tmp_path / "index" / (tmp_path / "index" / "CURRENT").read_text()
    assert (gen / "bm25").is_dir()
    assert "c4" not in {h.chunk.id for h in FaissStore(tmp_path / "index").load().search_sparse("text 4", 10)}


def test_other_bm25_settings_rebuild_in_memory(tmp_path):
    _faiss_fill(tmp_path, n=10)
    reader = FaissStore(tmp_path / "index", bm25=Bm25Params(k1=1.5, b=0.75)).load()
    assert reader.search_sparse("text 4", 1)[0].chunk.id == "c4"


def test_the_english_fields_older_names_still_work(tmp_path):
    """use_english / add(english=) / english_missing / set_english / has_english / search_english (benchmarks)."""
    store = FaissStore(tmp_path / "index")
    with store.writer(IndexIdentity("test-emb", DIM)) as w:
        w.use_english("en-emb", EN_DIM)
        w.add([_chunk(0), _chunk(1)], np.vstack([_vec(0), _vec(1)]), np.vstack([_en_vec(0), np.zeros(EN_DIM)]))
        assert w.english_missing() == [1]
        w.set_english([1], _en_vec(1)[None, :])
    reader = FaissStore(tmp_path / "index").load()
    assert reader.has_english("en-emb") and reader.english_embedder == "en-emb"
    assert [h.chunk.id for h in reader.search_english(_en_vec(1), 2)] == ["c1", "c0"]


def test_kill_9_during_publish_leaves_the_previous_generation(tmp_path):
    """A real process is killed while it writes generations in a loop; the index stays loadable."""
    _faiss_fill(tmp_path, n=5)
    script = textwrap.dedent(f"""
        import numpy as np, sys
        sys.path.insert(0, {str(os.getcwd())!r})
        from retrieval.store import FaissStore, IndexIdentity
        from retrieval.types import Chunk
        s = FaissStore({str(tmp_path / 'index')!r})
        i = 1000
        print("ready", flush=True)
        while True:
            with s.writer(IndexIdentity("test-emb", {DIM})) as w:
                chunks = [Chunk(f"k{{i}}-{{j}}", f"doc{{i}}", "x" * 5000, 0, 1, {{"collection": "a"}})
                          for j in range(200)]
                w.add(chunks, np.random.rand(200, {DIM}).astype("float32"))
            i += 1
    """)
    for delay in (0.3, 0.7, 1.1):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        import time
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = FaissStore(tmp_path / "index").load()
        assert len(store) == len(store.chunks()) >= 5
        assert store.search(_vec(2), 1)[0].chunk.id == "c2"
        assert store.search_sparse("text 2", 1)[0].chunk.id == "c2"
        assert len(store.search_sparse("x" * 5000, len(store))) == len(store) - 5, "BM25 matches the chunks"
