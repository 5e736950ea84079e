"""The retriever on a real index with the real embedder: dense, BM25 and hybrid (reciprocal rank fusion)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.language import detect_language
from retrieval.retriever import Retriever, reciprocal_rank_fusion, score_fusion
from retrieval.store import ENGLISH_FIELD, MAIN_FIELD, FaissStore, IndexIdentity
from retrieval.types import Chunk, Hit, SearchFilter

CANTEEN = ("The canteen on the ground floor serves breakfast from 7:30 and lunch from 12:00 to 15:00. Vegetarian "
           "and gluten-free dishes are available every day, and the menu is posted on the intranet each Monday. "
           "Coffee machines are on every floor. The allergen sheet for the canteen menu is form ALG-2291.")
TEXTS = [
    (CANTEEN, "kb", "en"),
    ("Form HR-17 is used to request parental leave.", "kb", "en"),
    ("Form FIN-08 is used to claim travel expenses.", "kb", "en"),
    ("Form IT-22 is used to request a new laptop.", "kb", "en"),
    ("Form FAC-31 is used to book a meeting room.", "kb", "en"),
    ("Los trabajadores disfrutan de veintitrés días de vacaciones pagadas al año.", "rrhh", "es"),
    ("Els treballadors tenen dret a vint-i-tres dies de vacances a l'any.", "rrhh", "ca"),
    ("El comedor abre a las ocho y sirve comidas hasta las tres.", "rrhh", "es"),
]


@pytest.fixture(scope="module")
def vectors(embedder) -> dict[str, np.ndarray]:
    return dict(zip((f"c{i}" for i in range(len(TEXTS))), embedder.embed_documents([t for t, _, _ in TEXTS]),
                    strict=True))


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder, vectors):
    root = tmp_path_factory.mktemp("retriever") / "index"
    chunks = [Chunk(f"c{i}", f"d{i}", text, 0, len(text), {"source": f"/docs/{i}.md", "collection": coll,
                                                           "language": lang})
              for i, (text, coll, lang) in enumerate(TEXTS)]
    writer = FaissStore(root)
    with writer.writer(IndexIdentity(embedder.model_id, embedder.dim)) as w:
        w.add(chunks, np.vstack([vectors[c.id] for c in chunks]))
    return FaissStore(root)  # a reader, as another process would open it


def retriever(embedder, store, mode: str) -> Retriever:
    return Retriever(embedder, store, mode=mode, candidates=10, detect_language=detect_language)


def test_bm25_finds_an_exact_code_that_dense_misses(embedder, store):
    query = "ALG-2291"
    top = {mode: retriever(embedder, store, mode).retrieve(query, 3)[0].chunk.id
           for mode in ("dense", "bm25", "hybrid")}
    assert top["dense"] != "c0", "precondition: the embedding prefers the short 'Form ...' passages"
    assert top["bm25"] == "c0" and top["hybrid"] == "c0"


def test_every_hit_carries_its_embedding_cosine(embedder, store, vectors):
    """Whatever ranked a hit, dense_score is the query-passage cosine the refusal threshold reads."""
    query = "Which form is ALG-2291?"
    q = embedder.embed_query(query)
    for mode in ("dense", "bm25", "hybrid"):
        hits = retriever(embedder, store, mode).retrieve(query, 5)
        assert hits
        for h in hits:
            assert h.dense_score == pytest.approx(float(vectors[h.chunk.id] @ q), abs=1e-5), mode
    hybrid = retriever(embedder, store, "hybrid").retrieve(query, 5)
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)


@pytest.mark.parametrize(("question", "expected"), [
    ("¿Cuántas vacaciones tiene un trabajador?", "c5"),      # vacación/vacaciones, trabajador/trabajadores
    ("Quantes vacances té un treballador?", "c6"),           # Catalan stems
    ("¿A qué hora abre el comedor?", "c7"),
])
def test_spanish_and_catalan_questions_match_inflected_forms(embedder, store, question, expected):
    hits = retriever(embedder, store, "bm25").retrieve(question, 3)
    assert hits[0].chunk.id == expected


def test_filters_apply_inside_every_mode(embedder, store):
    only_rrhh = SearchFilter(collections=("rrhh",))
    for mode in ("dense", "hybrid"):
        hits = retriever(embedder, store, mode).retrieve("ALG-2291", 3, only_rrhh)
        assert len(hits) == 3, f"{mode}: k hits come back when k matching chunks exist"
        assert {h.chunk.collection for h in hits} == {"rrhh"}
    hits = retriever(embedder, store, "bm25").retrieve("vacaciones trabajadores", 3, SearchFilter(languages=("ca",)))
    assert hits == [], "BM25 keeps only chunks that share a term and pass the filter"


def test_reciprocal_rank_fusion_favours_hits_both_lists_agree_on():
    def hits(*ids):
        return [Hit(Chunk(i, i, i, 0, 1), 1.0) for i in ids]

    fused = reciprocal_rank_fusion([hits("a", "b", "c"), hits("c", "d")], k=60)
    assert [h.chunk.id for h, _ in fused] == ["c", "a", "b", "d"]  # b and d tie: first seen first
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)


def test_score_fusion_keeps_a_clear_lead_that_rank_fusion_loses():
    def hits(*scored):
        return [Hit(Chunk(i, i, i, 0, 1), s) for i, s in scored]

    # the embedding puts "a" far ahead of the rest; BM25 ranks it fifth, but close behind its best
    dense = hits(("a", 0.95), ("b", 0.62), ("c", 0.61), ("d", 0.60), ("e", 0.55))
    bm25 = hits(("b", 12.0), ("c", 11.5), ("d", 11.0), ("e", 10.8), ("a", 10.5), ("f", 2.0))
    assert [h.chunk.id for h, _ in reciprocal_rank_fusion([dense, bm25])][:2] == ["b", "c"]
    fused = score_fusion([dense, bm25])
    assert [h.chunk.id for h, _ in fused][:2] == ["a", "b"]
    assert fused[0][1] == pytest.approx(1.0 + (10.5 - 2.0) / (12.0 - 2.0))  # min-max per list, summed
    assert fused[-1][0].chunk.id == "f" and fused[-1][1] == 0.0, "a list's last hit scores 0, like a missing one"
    assert fused[0][0] is dense[0], "the first appearance is kept (a dense hit keeps its cosine)"
    # a list whose scores are all equal counts each hit as its best; an empty list counts for nothing
    assert [s for _, s in score_fusion([hits(("x", 3.0), ("y", 3.0)), []])] == [1.0, 1.0]
    # only the top `depth` of each list are fused
    assert [h.chunk.id for h, _ in score_fusion([dense, bm25], depth=2)] == ["a", "b", "c"]


def test_bad_mode_is_refused_with_the_choices(embedder, store):
    with pytest.raises(ValueError, match="hybrid, dense, bm25"):
        Retriever(embedder, store, mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score, rrf"):
        Retriever(embedder, store, fusion="borda")  # type: ignore[arg-type]



def test_synonyms_and_feedback_expand_bm25(embedder, store):
    from retrieval.expansion import QueryExpander

    plain = Retriever(embedder, store, mode="bm25", candidates=10, detect_language=detect_language)
    assert plain.retrieve("notebook", 3) == [], "no passage says notebook"
    expander = QueryExpander(synonyms={"notebook": ["laptop"]})
    hits = Retriever(embedder, store, mode="bm25", candidates=10, detect_language=detect_language,
                     expander=expander).retrieve("notebook", 3)
    assert hits[0].chunk.id == "c3"
    fed = Retriever(embedder, store, mode="hybrid", candidates=10, detect_language=detect_language, feedback=2)
    assert fed.retrieve("ALG-2291", 3)[0].chunk.id == "c0"


def test_filters_on_section_and_dates_through_the_retriever(embedder, store):
    from retrieval.types import timestamp

    for mode in ("dense", "hybrid"):
        r = retriever(embedder, store, mode)
        assert r.retrieve("canteen", 3, SearchFilter(modified_before=timestamp("2000-01-01"))) == []
        assert len(r.retrieve("canteen", 3, SearchFilter(sections=("nothing like it",)))) == 0


def test_query_identifiers_are_codes_not_years_or_amounts():
    from retrieval.retriever import query_identifiers
    assert query_identifiers("Who signs form 1234567-12 and W-9?") == ["1234567-12", "w-9"]
    assert query_identifiers("Llei 19/2014, article DS2031, compte 00123456") == ["19/2014", "ds2031", "00123456"]
    assert query_identifiers("Sales in 2023 were 3.5 million, 1,200 units") == []


@pytest.fixture(scope="module")
def policies(tmp_path_factory, embedder):
    """100 look-alike policies, as the load test uploads them, each naming its own form number."""
    import random
    rng = random.Random(7)
    topics = ["travel", "leave", "procurement", "safety", "training", "archives", "budget", "IT equipment"]
    chunks, codes = [], []
    for i in range(100):
        code = f"{rng.randrange(10**6, 10**7)}-{i}"
        topic = rng.choice(topics)
        text = " ".join(f"{topic.title()} rule {j}: staff submit form {code} to the {topic} office within "
                        f"{rng.randint(2, 30)} days; approvals take {rng.randint(1, 9)} working days."
                        for j in range(rng.randint(3, 12)))
        chunks.append(Chunk(f"p{i}", f"p{i}", text, 0, len(text), {"source": f"/docs/policy-{i}.md",
                                                                  "collection": "load", "language": "en"}))
        codes.append(code)
    root = tmp_path_factory.mktemp("policies") / "index"
    with FaissStore(root).writer(IndexIdentity(embedder.model_id, embedder.dim)) as w:
        w.add(chunks, embedder.embed_documents([c.text for c in chunks]))
    return FaissStore(root), codes


def test_a_form_number_finds_its_policy_in_hybrid_search(embedder, policies):
    """Rank fusion alone lets look-alike passages that both lists rank middling bury the one exact match; the
    identifier bonus fixes that, and score fusion (the default) keeps BM25's clear lead on its own."""
    store, codes = policies

    def found(fusion: str, weight: float) -> int:
        r = Retriever(embedder, store, mode="hybrid", candidates=20, identifier_weight=weight,
                      detect_language=detect_language, fusion=fusion)  # type: ignore[arg-type]
        return sum(f"p{i}" in [h.chunk.id for h in r.retrieve(f"form {code}", 3)] for i, code in enumerate(codes))

    assert found("rrf", 0.0) < 100, "precondition: plain rank fusion misses some"
    assert found("rrf", 1.0) == 100
    assert found("score", 0.0) == 100
    assert found("score", 1.0) == 100


class CountingEmbedder:
    """The real English model, counting the questions it embeds."""

    def __init__(self, inner) -> None:
        self.inner, self.queries = inner, []
        self.model_id, self.dim = inner.model_id, inner.dim

    def warm_up(self) -> None:
        self.inner.warm_up()

    def embed_documents(self, texts):
        return self.inner.embed_documents(texts)

    def embed_query(self, text):
        self.queries.append(text)
        return self.inner.embed_query(text)


@pytest.fixture(scope="module")
def english_store(tmp_path_factory, embedder, vectors):
    """The same chunks, with the bundled all-MiniLM-L6-v2's vectors for the English ones."""
    from retrieval.embedder import SentenceTransformerEmbedder

    english = CountingEmbedder(SentenceTransformerEmbedder())
    root = tmp_path_factory.mktemp("retriever-en") / "index"
    chunks = [Chunk(f"c{i}", f"d{i}", text, 0, len(text), {"source": f"/docs/{i}.md", "collection": coll,
                                                           "language": lang})
              for i, (text, coll, lang) in enumerate(TEXTS)]
    en_vectors = np.zeros((len(chunks), english.dim), dtype=np.float32)
    en_rows = [i for i, c in enumerate(chunks) if c.meta["language"] == "en"]
    en_vectors[en_rows] = english.embed_documents([chunks[i].text for i in en_rows])
    with FaissStore(root).writer(IndexIdentity(embedder.model_id, embedder.dim)) as w:
        w.use_field(ENGLISH_FIELD, english.model_id, english.dim)
        w.add(chunks, {MAIN_FIELD: np.vstack([vectors[c.id] for c in chunks]), ENGLISH_FIELD: en_vectors})
    return FaissStore(root), english


def test_english_questions_get_a_third_ranking_from_the_english_model(embedder, english_store, vectors):
    store, english = english_store
    r = Retriever(embedder, store, mode="hybrid", candidates=10, detect_language=detect_language,
                  english_embedder=english)
    hits = r.retrieve("Where can I find the menu of the canteen?", 3)
    assert hits[0].chunk.id == "c0" and english.queries == ["Where can I find the menu of the canteen?"]
    q = embedder.embed_query("Where can I find the menu of the canteen?")
    for h in hits:  # the refusal threshold still reads the main embedder's cosine
        assert h.dense_score == pytest.approx(float(vectors[h.chunk.id] @ q), abs=1e-4)
    three = r.retrieve("Which form do I use to book a meeting room?", 8)
    two = retriever(embedder, store, "hybrid").retrieve("Which form do I use to book a meeting room?", 8)
    assert [h.score for h in three][0] > [h.score for h in two][0], "a third list adds to the fused scores"
    r.retrieve("¿A qué hora abre el comedor?", 3)
    r.retrieve("A quina hora obre el menjador?", 3)
    assert len(english.queries) == 2, "Spanish and Catalan questions never use the English-only model"
    assert r.retrieve("Which form do I use to book a meeting room?", 3, SearchFilter(collections=("rrhh",))) \
        and all(h.chunk.collection == "rrhh" for h in r.retrieve("Which form books a room?", 3,
                                                                   SearchFilter(collections=("rrhh",))))
