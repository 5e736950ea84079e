"""BM25 on its own: language-aware terms (stems, stopwords, accents) and the saved score matrix."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.bm25 import Analyzers, Bm25Index, Bm25Params

PASSAGES = [
    ("Los trabajadores disfrutan de veintitrés días de vacaciones pagadas al año.", "es"),
    ("La cafetería abre a las ocho y sirve comidas hasta las tres.", "es"),
    ("Els treballadors tenen dret a vint-i-tres dies de vacances a l'any.", "ca"),
    ("La col·laboració amb altres empreses s'aprova a la reunió mensual.", "ca"),
    ("Staff are reimbursed for travel expenses within 30 days.", "en"),
    ("The canteen serves lunch from noon; visitors sign in at reception.", "en"),
]


@pytest.fixture(scope="module")
def index() -> Bm25Index:
    return Bm25Index.build([t for t, _ in PASSAGES], [lang for _, lang in PASSAGES], Bm25Params())


def _top(index: Bm25Index, query: str, language: str, **kw) -> list[int]:
    return [row for row, _ in index.search(query, 3, language=language, **kw)]


def test_spanish_inflected_forms_meet(index):
    # singular / plural, with and without accents: "vacación" ~ "vacaciones", "trabajador" ~ "trabajadores"
    assert _top(index, "¿Cuánta vacación tiene un trabajador?", "es")[0] == 0
    assert _top(index, "vacacion", "es")[0] == 0


def test_catalan_inflected_forms_and_punt_volat_meet(index):
    assert _top(index, "Quantes vacances té cada treballador?", "ca")[0] == 2
    assert _top(index, "collaboracions amb una empresa", "ca")[0] == 3  # typed without the punt volat


def test_english_stems_and_stopwords(index):
    assert _top(index, "reimbursement of a travel expense", "en")[0] == 4
    assert index.search("the of and to", 3, language="en") == [], "stopwords alone match nothing"


def test_only_matching_passages_come_back_best_first(index):
    hits = index.search("lunch canteen", 10, language="en")
    assert [row for row, _ in hits] == [5]
    assert index.search("zeppelin", 10, language="en") == []


def test_allowed_mask_applies_inside_the_search(index):
    query = "canteen lunch and travel expenses"
    assert sorted(row for row, _ in index.search(query, 10, language="en")) == [4, 5]
    only_travel = np.array([True, True, True, True, True, False])
    assert [row for row, _ in index.search(query, 10, language="en", allowed=only_travel)] == [4]
    assert index.search(query, 10, language="en", allowed=np.zeros(6, dtype=bool)) == []
    with pytest.raises(ValueError, match="mask has 2 rows"):
        index.search("x", 1, allowed=np.array([True, False]))


def test_analyzers_differ_by_language():
    a = Analyzers()
    assert a.get("es").terms("Las vacaciones") == ["vacacion"]
    assert a.get("ca").terms("l'empresa i les empreses") == ["empr", "empr"]
    assert a.get("en").terms("The workers working") == ["worker", "work"]
    assert a.get("fr").terms("Les vacances") == ["les", "vacances"], "unknown languages: plain words, no stemming"


def test_saved_index_loads_back_and_refuses_other_chunks(index, tmp_path):
    index.save(tmp_path / "bm25")
    loaded = Bm25Index.load(tmp_path / "bm25", Bm25Params(), len(PASSAGES))
    assert loaded is not None and loaded.texts_analysed == 0, "loading analyses nothing"
    assert loaded.search("vacaciones", 3, language="es") == index.search("vacaciones", 3, language="es")
    other = Bm25Index.load(tmp_path / "bm25", Bm25Params(k1=1.2), len(PASSAGES))
    assert other is not None, "k1 and b apply at query time: changing them needs no rebuild"
    assert Bm25Index.load(tmp_path / "bm25", Bm25Params(), len(PASSAGES) + 1) is None
    assert Bm25Index.load(tmp_path / "missing", Bm25Params(), len(PASSAGES)) is None


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> None:
    assert [r for r, _ in a] == [r for r, _ in b] and a, "same rows, same order"
    assert [s for _, s in a] == pytest.approx([s for _, s in b])


def test_incremental_add_and_delete_score_like_a_fresh_build():
    """Adding texts analyses only them; the result ranks and scores exactly like building from scratch."""
    texts, langs = [t for t, _ in PASSAGES], [lang for _, lang in PASSAGES]
    grown = Bm25Index.build(texts[:3], langs[:3], Bm25Params())
    grown.add(texts[3:], langs[3:])
    assert grown.texts_analysed == len(PASSAGES), "each text analysed once"
    fresh = Bm25Index.build(texts, langs, Bm25Params())
    for query, lang in [("vacaciones trabajadores", "es"), ("lunch travel expenses", "en"), ("vacances", "ca")]:
        _same(grown.search(query, 6, language=lang), fresh.search(query, 6, language=lang))
    grown.keep(np.array([0, 2, 4, 5]))  # delete rows 1 and 3
    kept = Bm25Index.build([texts[i] for i in (0, 2, 4, 5)], [langs[i] for i in (0, 2, 4, 5)], Bm25Params())
    assert grown.texts_analysed == len(PASSAGES), "deleting re-analyses nothing"
    for query, lang in [("vacaciones cafetería", "es"), ("canteen lunch", "en")]:
        _same(grown.search(query, 6, language=lang), kept.search(query, 6, language=lang))
    assert grown.search("cafetería", 6, language="es") == [], "deleted text no longer matches"


def test_scores_follow_lucene_bm25():
    index = Bm25Index.build(["apple banana", "apple apple cherry date", "cherry"], ["en"] * 3,
                            Bm25Params(k1=1.2, b=0.75))
    n, df, avgdl = 3, 2, (2 + 4 + 1) / 3
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
    expect = {0: idf * 1 / (1 + 1.2 * (0.25 + 0.75 * 2 / avgdl)), 1: idf * 2 / (2 + 1.2 * (0.25 + 0.75 * 4 / avgdl))}
    assert dict(index.search("apple", 3, language="en")) == pytest.approx(expect)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="0 <= b <= 1"):
        Bm25Params(b=1.5)


def test_feedback_terms_come_from_the_best_hits_not_the_query(index):
    terms = index.feedback_terms("vacaciones", [0], language="es")
    assert terms and "vacacion" not in terms
    assert {"trabajador", "pag"} & set(terms), terms  # stems of the passage about paid holidays
    assert max(terms.values()) <= 0.3
    boosted = index.search("vacaciones", 6, language="es", boost={"cafet": 0.5})
    assert [row for row, _ in boosted] == [0, 1], "a boost term brings in the passages that hold it, weighted less"


def test_words_joined_by_underscores_are_searchable():
    """Commands, settings and file names in technical manuals (`dh_make`, `MAX_FILE_MB`) are words to search by;
    a form's blank line of underscores is not."""
    texts = ["Run dh_make once in the source tree to create the debian directory.",
             "Run make once in the build tree; then install the package.",
             "Set MAX_FILE_MB to refuse larger uploads.",
             "Name: ________ Signature: ________"]
    index = Bm25Index.build(texts, ["en"] * len(texts), Bm25Params())
    assert _top(index, "What does dh_make do?", "en")[0] == 0
    assert _top(index, "MAX_FILE_MB", "en") == [2]
    assert _top(index, "max file size", "en")[0] == 2
    assert "________" not in Analyzers().get("en").terms(texts[3])
