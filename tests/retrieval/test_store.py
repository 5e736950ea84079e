"""The FAISS store: a contract every VectorStore passes, plus durability of published generations."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from retrieval.bm25 import Bm25Params
from retrieval.errors import IndexNotFoundError
from retrieval.store import FaissStore, IndexConfig, IndexIdentity
from retrieval.types import Chunk, SearchFilter, timestamp

DIM = 8


def _chunk(i: int, collection: str = "a", doc: str | None = None, **meta) -> Chunk:
    return Chunk(f"c{i}", doc or f"d{i}", f"text {i}", 0, 6, {"source": f"/s/{doc or i}", "collection": collection,
                                                             "language": "en", **meta})


def _vec(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class VectorStoreContract:
    """What any VectorStore must do; subclasses provide `make_store`."""

    def make_store(self, tmp_path): raise NotImplementedError

    def fill(self, store, n=20, collections=("a", "b")):
        with store.writer(IndexIdentity("test-emb", DIM)) as w:
            chunks = [_chunk(i, collections[i % len(collections)]) for i in range(n)]
            w.add(chunks, np.vstack([_vec(i) for i in range(n)]))
        return store

    def test_search_finds_the_nearest_first(self, tmp_path):
        store = self.fill(self.make_store(tmp_path))
        hits = store.search(_vec(3), 3)
        assert hits[0].chunk.id == "c3" and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    def test_filter_is_applied_inside_the_search(self, tmp_path):
        store = self.fill(self.make_store(tmp_path), n=40, collections=("a", "b", "b", "b", "b", "b", "b", "b"))
        hits = store.search(_vec(1), 5, SearchFilter(collections=("a",)))
        assert len(hits) == 5, "k hits come back when k matching chunks exist"
        assert all(h.chunk.collection == "a" for h in hits)
        assert store.search(_vec(1), 5, SearchFilter(collections=("zzz",))) == []

    def test_every_filter_returns_k_hits_even_when_the_matches_rank_last(self, tmp_path):
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
        store = self.make_store(tmp_path)
        with store.writer(IndexIdentity("test-emb", DIM)) as w:
            w.add(chunks, vecs)
        store = self.make_store(tmp_path).load()
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

    def test_delete_documents(self, tmp_path):
        store = self.fill(self.make_store(tmp_path), n=10)
        with store.writer(IndexIdentity("test-emb", DIM)) as w:
            assert w.delete_documents(["d3", "d4"]) == 2
        reread = self.make_store(tmp_path).load()
        assert len(reread) == 8 and "c3" not in {c.id for c in reread.chunks()}

    def test_sparse_search_matches_terms_with_filters_inside(self, tmp_path):
        store = self.fill(self.make_store(tmp_path), n=40, collections=("a", "b", "b", "b", "b", "b", "b", "b"))
        assert store.search_sparse("text 13", 3)[0].chunk.id == "c13"
        hits = store.search_sparse("text", 5, SearchFilter(collections=("a",)))
        assert len(hits) == 5, "k hits come back when k matching chunks exist"
        assert all(h.chunk.collection == "a" for h in hits)
        assert store.search_sparse("text", 5, SearchFilter(collections=("zzz",))) == []
        assert store.search_sparse("zeppelin", 5) == []

    def test_similarities_are_the_stored_cosines(self, tmp_path):
        store = self.fill(self.make_store(tmp_path))
        chunks = [c for c in store.chunks() if c.id in ("c3", "c7")]
        sims = store.similarities(_vec(3), chunks)
        assert sims[0] == pytest.approx(1.0, abs=1e-5)
        assert sims[1] == pytest.approx(float(_vec(3) @ _vec(7)), abs=1e-5)

    def test_adding_the_same_chunk_twice_keeps_one(self, tmp_path):
        store = self.fill(self.make_store(tmp_path), n=5)
        self.fill(store, n=5)
        assert len(self.make_store(tmp_path).load()) == 5


class TestFaissStore(VectorStoreContract):
    def make_store(self, tmp_path):
        return FaissStore(tmp_path / "index")

    def test_ingest_analyses_only_new_chunks_for_bm25(self, tmp_path):
        """BM25 is updated in place on ingest and delete; the chunks already indexed are never re-analysed."""
        self.fill(self.make_store(tmp_path), n=50)
        writer = self.make_store(tmp_path)
        with writer.writer(IndexIdentity("test-emb", DIM)) as w:
            w.add([_chunk(i) for i in range(50, 53)], np.vstack([_vec(i) for i in range(50, 53)]))
            w.delete_documents(["d7"])
            assert w.bm25.texts_analysed == 3
        reader = self.make_store(tmp_path).load()
        assert reader.search_sparse("text 51", 1)[0].chunk.id == "c51"
        assert "c7" not in {h.chunk.id for h in reader.search_sparse("text 7", 60)}
        assert reader.bm25.texts_analysed == 0, "a reader loads the stored BM25 data"

    @pytest.mark.parametrize("kind", ["hnsw", "ivf"])
    def test_approximate_index_above_the_exact_size(self, tmp_path, kind):
        """Past exact_max the store builds an HNSW or IVF index, stores it, and appends to it on ingest."""
        cfg = IndexConfig(kind="auto" if kind == "hnsw" else "ivf", exact_max=100, ivf_nprobe=64)
        n = 1200
        store = FaissStore(tmp_path / "index", index=cfg)
        with store.writer(IndexIdentity("test-emb", DIM)) as w:
            w.add([_chunk(i) for i in range(n)], np.vstack([_vec(i) for i in range(n)]))
        gen = tmp_path / "index" / (tmp_path / "index" / "CURRENT").read_text()
        assert (gen / "ann.faiss").is_file()
        reader = FaissStore(tmp_path / "index", index=cfg).load()
        assert reader.index_kind == kind
        found = sum(reader.search(_vec(i), 1)[0].chunk.id == f"c{i}" for i in range(0, n, 40))
        assert found >= 28, f"{kind}: a stored vector finds itself ({found}/30)"
        with store.writer(IndexIdentity("test-emb", DIM)) as w:
            w.add([_chunk(5000)], _vec(5000)[None, :])
        assert reader.refresh() and reader.search(_vec(5000), 1)[0].chunk.id == "c5000"
        assert FaissStore(tmp_path / "index").load().index_kind == "flat", "small corpora search exactly"

    def test_empty_store_says_ingest_first(self, tmp_path):
        with pytest.raises(IndexNotFoundError, match="consulta ingest"):
            FaissStore(tmp_path / "nothing").load()

    def test_failed_write_publishes_nothing(self, tmp_path):
        store = self.fill(self.make_store(tmp_path), n=5)
        with pytest.raises(RuntimeError), store.writer(IndexIdentity("test-emb", DIM)) as w:
            w.delete_documents(["d0", "d1"])
            raise RuntimeError("crash mid-write")
        assert len(FaissStore(tmp_path / "index").load()) == 5

    def test_reader_picks_up_a_new_generation(self, tmp_path):
        writer = self.fill(self.make_store(tmp_path), n=5)
        reader = FaissStore(tmp_path / "index").load()
        assert reader.search_sparse("text 99", 1)[0].chunk.id != "c99"
        with writer.writer(IndexIdentity("test-emb", DIM)) as w:
            w.add([_chunk(99)], _vec(99)[None, :])
        assert reader.refresh() and len(reader) == 6
        assert reader.search_sparse("text 99", 1)[0].chunk.id == "c99", "BM25 switches with the vectors"

    def test_bm25_is_written_with_the_generation_not_rebuilt_by_readers(self, tmp_path, caplog):
        self.fill(self.make_store(tmp_path), n=10)
        current = (tmp_path / "index" / "CURRENT").read_text()
        assert (tmp_path / "index" / current / "bm25").is_dir()
        with caplog.at_level("INFO", logger="retrieval.store"):
            reader = FaissStore(tmp_path / "index").load()
            assert reader.search_sparse("text 4", 1)[0].chunk.id == "c4"
        assert "built BM25" not in caplog.text

    def test_generation_without_bm25_is_still_searchable_and_next_write_stores_it(self, tmp_path):
        """An index written before BM25 existed: BM25 is built in memory on load, and stored by the next write."""
        store = self.fill(self.make_store(tmp_path), n=10)
        gen = tmp_path / "index" / (tmp_path / "index" / "CURRENT").read_text()
        shutil.rmtree(gen / "bm25")
        reader = FaissStore(tmp_path / "index").load()
        assert reader.search_sparse("text 4", 1)[0].chunk.id == "c4"
        with store.writer(IndexIdentity("test-emb", DIM)) as w:
            w.delete_documents(["d4"])
        gen = tmp_path / "index" / (tmp_path / "index" / "CURRENT").read_text()
        assert (gen / "bm25").is_dir()
        assert "c4" not in {h.chunk.id for h in FaissStore(tmp_path / "index").load().search_sparse("text 4", 10)}

    def test_other_bm25_settings_rebuild_in_memory(self, tmp_path):
        self.fill(self.make_store(tmp_path), n=10)
        reader = FaissStore(tmp_path / "index", bm25=Bm25Params(k1=1.5, b=0.75)).load()
        assert reader.search_sparse("text 4", 1)[0].chunk.id == "c4"

    def test_kill_9_during_publish_leaves_the_previous_generation(self, tmp_path):
        """A real process is killed while it writes generations in a loop; the index stays loadable."""
        self.fill(self.make_store(tmp_path), n=5)
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


EN_DIM = 4


def _en_vec(i: int) -> np.ndarray:
    v = np.random.default_rng(1000 + i).standard_normal(EN_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_english_vectors_are_published_searched_and_kept_aligned_through_deletes(tmp_path):
    """A second, English-only ranking: English chunks only, filters inside, rows still right after a delete."""
    root = tmp_path / "index"
    langs = ["en", "es", "en", "ca", "en", "en"]
    chunks = [_chunk(i, collection="a" if i < 4 else "b", language=lang) for i, lang in enumerate(langs)]
    english = np.vstack([_en_vec(i) if lang == "en" else np.zeros(EN_DIM, np.float32)
                         for i, lang in enumerate(langs)])
    store = FaissStore(root)
    with store.writer(IndexIdentity("test-emb", DIM)) as w:
        w.use_english("en-emb", EN_DIM)
        w.add(chunks, np.vstack([_vec(i) for i in range(6)]), english)
    reader = FaissStore(root).load()
    assert reader.has_english("en-emb") and not reader.has_english("other-model")
    hits = reader.search_english(_en_vec(2), 10)
    assert hits[0].chunk.id == "c2" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert {h.chunk.id for h in hits} == {"c0", "c2", "c4", "c5"}, "Spanish and Catalan chunks never come back"
    assert [h.chunk.id for h in reader.search_english(_en_vec(2), 5, SearchFilter(collections=("b",)))] \
        in (["c4", "c5"], ["c5", "c4"])
    with FaissStore(root).writer(IndexIdentity("test-emb", DIM)) as w:
        w.delete_documents(["d0", "d2"])
    reader = FaissStore(root).load()
    assert reader.search_english(_en_vec(5), 1)[0].chunk.id == "c5", "vectors stay with their chunks"
    assert {h.chunk.id for h in reader.search_english(_en_vec(5), 10)} == {"c4", "c5"}


def test_an_index_made_without_english_vectors_gets_them_filled_in(tmp_path):
    root = tmp_path / "index"
    store = FaissStore(root)
    with store.writer(IndexIdentity("test-emb", DIM)) as w:
        w.add([_chunk(0), _chunk(1, language="es"), _chunk(2)], np.vstack([_vec(i) for i in range(3)]))
    reader = FaissStore(root).load()
    assert not reader.has_english("en-emb") and reader.search_english(_en_vec(0), 3) == []
    with FaissStore(root).writer(IndexIdentity("test-emb", DIM)) as w:
        w.use_english("en-emb", EN_DIM)
        assert w.english_missing() == [0, 2], "only English chunks need the English model"
        w.set_english([0, 2], np.vstack([_en_vec(0), _en_vec(2)]))
        assert w.english_missing() == []
        w.add([_chunk(3)], _vec(3)[None, :])  # added without English vectors (the setting was off): missing again
        assert w.english_missing() == [3]
    reader = FaissStore(root).load()
    assert reader.has_english("en-emb") and len(reader) == 4
    assert reader.search_english(_en_vec(2), 1)[0].chunk.id == "c2"
    assert {h.chunk.id for h in reader.search_english(_en_vec(2), 10)} == {"c0", "c2"}
    with FaissStore(root).writer(IndexIdentity("test-emb", DIM)) as w:
        w.use_english("another-en-emb", EN_DIM)  # a different English model: the old vectors are not mixed in
        assert w.english_missing() == [0, 2, 3]
