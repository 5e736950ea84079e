"""The answerability verifier's features and decision, on hand-made passages (no model needed)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from app.answerability import FEATURES, AnswerabilityVerifier, VerifierWeights
from retrieval.bm25 import Bm25Index, Bm25Params
from retrieval.types import Chunk, Hit

PASSAGES = [
    "Packaging a library. The package scripts must run ldconfig to create the symbolic links of shared "
    "libraries.",
    "Osamu Aoki maintains this guide. He wrote the first version in 2005 and updated it for wheezy.",
    "Use pbuilder to build packages in a clean chroot. Run sudo pbuilder create first.",
]


def _verifier(coef: tuple[float, ...] = (0.0,) * len(FEATURES), threshold: float = 0.5) -> AnswerabilityVerifier:
    bm25 = Bm25Index.build(PASSAGES, ["en"] * len(PASSAGES), Bm25Params())
    weights = VerifierWeights(coef, 0.0, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), threshold)
    return AnswerabilityVerifier(weights, bm25.idf, bm25.analyzers)


def _hits(relevances=(0.86, 0.82, 0.80)) -> list[Hit]:
    return [Hit(Chunk(f"c{i}", f"d{i}", text, 0, len(text), {"source": f"doc{i}.pdf"}), r, r)
            for i, (text, r) in enumerate(zip(PASSAGES, relevances, strict=True))]


def test_a_question_the_passages_hold_is_covered_in_one_sentence():
    question = "What must the package scripts of a library run to create the symbolic links?"
    f = _verifier().features(question, _hits(), "en")
    assert f["coverage"] > 0.5 and f["coverage_sentence"] > 0.5
    assert f["rarest_missing"] < 0.5 and f["answer_type_missing"] == 0.0
    assert math.isclose(f["relevance"], 0.86) and math.isclose(f["relevance_gap"], 0.04)


def test_a_question_about_a_topic_no_passage_names_misses_its_rarest_word():
    f = _verifier().features("How do I package a Rust program built with cargo?", _hits(), "en")
    assert f["rarest_missing"] == 1.0
    assert f["coverage"] < 0.5


def test_a_question_for_an_email_the_passages_lack_is_flagged_and_one_they_hold_is_not():
    v = _verifier()
    assert v.features("What is the e-mail address of Osamu Aoki?", _hits(), "en")["answer_type_missing"] == 1.0
    assert v.features("In what year did Osamu Aoki write the first version?", _hits(),
                      "en")["answer_type_missing"] == 0.0


def test_the_decision_follows_the_weights_and_threshold():
    coverage = FEATURES.index("coverage")
    coef = tuple(4.0 if i == coverage else 0.0 for i in range(len(FEATURES)))
    v = _verifier(coef, threshold=0.7)
    held = v.verify("What must the package scripts of a library run to create the symbolic links?", _hits(), "en")
    absent = v.verify("How do I package a Rust program built with cargo?", _hits(), "en")
    assert held.answerable and not absent.answerable
    assert held.probability > absent.probability
    assert set(held.to_dict()["features"]) == set(FEATURES)


def test_the_shipped_weights_load_and_say_how_they_were_fitted():
    weights = VerifierWeights.bundled()
    assert len(weights.coef) == len(FEATURES) and 0.0 <= weights.threshold <= 1.0
    assert weights.trained_on


def test_the_verifier_training_refuses_an_article_it_reports_on():
    from bench.qa_sets import LeakError, assert_disjoint

    row = {"set": "squad2", "label": 1, "features": dict.fromkeys(FEATURES, 0.0)}
    clean = [{**row, "split": "train", "article": "Normans"}, {**row, "split": "test", "article": "Amazon"}]
    assert_disjoint(clean)
    with pytest.raises(LeakError, match="Amazon"):
        assert_disjoint([*clean, {**row, "split": "dev", "article": "Amazon"}])
    with pytest.raises(LeakError, match="Super_Bowl_50"):  # XQuAD en and es are one article in two languages
        assert_disjoint([*clean, {**row, "set": "xquad-es", "split": "train", "article": "Super_Bowl_50"},
                         {**row, "set": "xquad-en", "split": "test", "article": "Super_Bowl_50"}])
    with pytest.raises(LeakError, match="golden"):
        assert_disjoint([*clean, {**row, "set": "golden-ca", "split": "train", "article": "maint-guide.ca.pdf"}])


def test_the_closest_sentence_in_meaning_is_found_in_spanish_and_catalan(embedder):
    """With the index's encoder, the verifier finds in each passage the sentence closest to the question in
    meaning (the answer shown for a bare citation) and scores the passages that answer above those that don't."""
    bm25 = Bm25Index.build(PASSAGES, ["en"] * len(PASSAGES), Bm25Params())
    weights = VerifierWeights.bundled()
    v = AnswerabilityVerifier(weights, bm25.idf, bm25.analyzers, embedder)
    text = ("Las vacaciones se piden en el portal del empleado. El personal tiene 23 días laborables de vacaciones "
            "al año. La cafetería abre a las ocho.")
    hit = Hit(Chunk("es", "d", text, 0, len(text), {"source": "manual.pdf"}), 0.85, 0.85)
    sem, best = v.sentences("¿Cuántos días de vacaciones tiene el personal?", [hit])
    assert best["es"].startswith("El personal tiene 23 días")
    text_ca = "El menjador obre a les vuit. El personal té 23 dies laborables de vacances l'any."
    hit_ca = Hit(Chunk("ca", "d", text_ca, 0, len(text_ca), {"source": "manual.pdf"}), 0.85, 0.85)
    sem_ca, best_ca = v.sentences("Quants dies de vacances té el personal?", [hit_ca])
    assert best_ca["ca"].startswith("El personal té 23 dies")
    toc = ("4.1 Dies de vacances del personal . . . . . . . . . . . . 12\n"
           "Cada any el personal té 23 dies laborables de vacances.")
    hit_toc = Hit(Chunk("toc", "d", toc, 0, len(toc), {"source": "manual.pdf"}), 0.85, 0.85)
    _, best_toc = v.sentences("Quants dies de vacances té el personal?", [hit_toc])
    # a table of contents' line is never the quote
    assert "Cada any el personal té 23 dies" in best_toc["toc"] and ". . ." not in best_toc["toc"]
    off, _ = v.sentences("Com es configura un tallafoc amb nftables?", [hit_ca])
    assert sem_ca > off + 0.05
    verdict = v.verify("Quants dies de vacances té el personal?", [hit_ca], "ca")
    assert verdict.best_sentences == best_ca and set(verdict.features) == set(FEATURES)


class _Counting:
    """The real embedder, counting what it is asked to embed."""

    def __init__(self, embedder) -> None:
        self.embedder, self.documents, self.queries = embedder, [], 0

    def embed_documents(self, texts):
        self.documents += list(texts)
        return self.embedder.embed_documents(texts)

    def embed_query(self, text):
        self.queries += 1
        return self.embedder.embed_query(text)


def test_reading_the_passages_made_whole_embeds_only_the_sentences_that_changed(embedder):
    bm25 = Bm25Index.build(PASSAGES, ["en"] * len(PASSAGES), Bm25Params())
    counting = _Counting(embedder)
    v = AnswerabilityVerifier(VerifierWeights.bundled(), bm25.idf, bm25.analyzers, counting)
    cut = "El menjador obre a les vuit. El personal té 23 dies laborables"
    whole = cut + " de vacances l'any."
    retrieved = [Hit(Chunk("ca", "d", cut, 0, len(cut), {"source": "manual.pdf"}), 0.85, 0.85)]
    reading = [Hit(Chunk("ca", "d", whole, 0, len(whole), {"source": "manual.pdf"}), 0.85, 0.85)]
    verdict = v.verify("Quants dies de vacances té el personal?", retrieved, "ca", reading=reading)
    assert verdict.best_sentences["ca"] == "El personal té 23 dies laborables de vacances l'any."
    assert counting.queries == 1
    assert sorted(counting.documents) == ["El menjador obre a les vuit.", "El personal té 23 dies laborables",
                                          "El personal té 23 dies laborables de vacances l'any."]


def _language_hits(language: str | None) -> list[Hit]:
    return [Hit(Chunk(f"c{i}", f"d{i}", text, 0, len(text), {"source": f"doc{i}.pdf", "language": language}), r, r)
            for i, (text, r) in enumerate(zip(PASSAGES, (0.86, 0.82, 0.80), strict=True))]


def test_passages_in_another_language_are_judged_with_the_cross_language_weights():
    """A Spanish question over English passages cannot find its words there: coverage would refuse it, so the
    cross-language weights (which trust meaning, not words) decide; a same-language pair keeps the main ones."""
    coverage, relevance = FEATURES.index("coverage"), FEATURES.index("relevance")
    main = VerifierWeights(tuple(6.0 if i == coverage else 0.0 for i in range(len(FEATURES))), -3.0,
                           (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), 0.5)
    cross = VerifierWeights(tuple(8.0 if i == relevance else 0.0 for i in range(len(FEATURES))), -4.0,
                            (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), 0.4)
    bm25 = Bm25Index.build(PASSAGES, ["en"] * len(PASSAGES), Bm25Params())
    question = "¿Qué tienen que ejecutar los guiones de una biblioteca para crear los enlaces simbólicos?"
    alone = AnswerabilityVerifier(main, bm25.idf, bm25.analyzers).verify(question, _language_hits("en"), "es")
    assert not alone.answerable  # without cross-language weights the main ones refuse it
    v = AnswerabilityVerifier(replace(main, cross=cross), bm25.idf, bm25.analyzers)
    verdict = v.verify(question, _language_hits("en"), "es")
    assert verdict.cross and verdict.answerable and verdict.threshold == 0.4
    assert verdict.to_dict()["cross_language"] is True
    assert not v.verify(question, _language_hits("es"), "es").cross  # same language: the main weights
    assert not v.verify(question, _language_hits(None), "es").cross  # language unknown: the main weights
    restored = VerifierWeights.from_dict(v.weights.to_dict())
    assert restored.cross == cross


def test_a_question_for_an_address_no_passage_holds_is_refused_whatever_the_weights():
    """A Catalan question for an e-mail over English passages without one: the lenient cross-language weights
    would take it, but no passage holds an e-mail address at all."""
    relevance = FEATURES.index("relevance")
    lenient = VerifierWeights(tuple(8.0 if i == relevance else 0.0 for i in range(len(FEATURES))), 0.0,
                              (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), 0.1)
    v = AnswerabilityVerifier(replace(lenient, cross=lenient), lambda terms: [1.0] * len(terms))
    asked = v.verify("Quin és el correu electrònic del director general?", _language_hits("en"), "ca")
    assert not asked.answerable and asked.missing == "email" and asked.to_dict()["missing"] == "email"
    web = v.verify("¿Cuál es la página web del servicio de préstamo?", _language_hits("en"), "es")
    assert not web.answerable and web.missing == "url"
    text = "Write to the helpdesk at help@example.org for a new badge."
    held = v.verify("Quin és el correu electrònic del servei?",
                    [Hit(Chunk("m", "d", text, 0, len(text), {"language": "en"}), 0.9, 0.9)], "ca")
    assert held.answerable and held.missing is None


def test_the_shipped_weights_have_cross_language_weights():
    weights = VerifierWeights.bundled()
    assert weights.cross is not None and len(weights.cross.coef) == len(FEATURES)
    assert "cross" in weights.trained_on
