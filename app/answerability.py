"""Does what was retrieved answer the question? A small trained verifier decides, not the 1.5B model.

The verifier reads cheap signals of the question and its retrieved passages, in any of the three languages:

- how relevant the best passage is (the embedding cosine every hit carries) and how far ahead it is;
- how much of the question's content the passages hold, weighted by how rare each word is in the index
  (a question about Rust or Flatpak over documents that never name them misses its rarest word);
- whether one sentence holds most of the question (the fact is usually stated in one place), by its words
  and by its meaning (the embedding cosine of the question and the closest sentence of the passages: the
  index's own encoder, multilingual-e5, so it holds across the three languages);
- whether the kind of answer asked for (a date, a number, an e-mail address, a web address, a version) is
  there at all in the sentences that speak of the question's subject.

A logistic regression over these features gives the probability that the passages answer the question.
When the passages are in another language than the question (a Spanish question over English documents),
the words of the question cannot be found in them as they are, so a second set of weights, fitted on such
pairs (XQuAD's questions over the other language's passages), reads the same features with less trust in
the lexical ones. The weights and thresholds ship in `app/verifier.json`, fitted by `bench/verifier.py` on articles that
no reported figure uses (split by article; the file records which), with both kinds of negatives: SQuAD
2.0's adversarial questions and questions paired with related passages that lack the answer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from retrieval.bm25 import Analyzers
from retrieval.compressor import split_sentences
from retrieval.embedder import Embedder
from retrieval.types import Hit

FEATURES = ("relevance", "relevance_gap", "coverage", "coverage_best", "coverage_sentence", "rarest_missing",
            "answer_type_missing", "sem_sentence")
MIN_SENTENCE_CHARS = 16  # shorter "sentences" (headers, page numbers) are not compared with the question

# What the question asks for, by its wording in en/es/ca, and what such an answer looks like in a passage.
ANSWER_TYPES: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    "email": (re.compile(r"\b(e-?mail|correo|correu|adre[cç]a electr[oò]nica)\b", re.I),
              re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|<[^>]*@[^>]*>")),
    "url": (re.compile(r"\b(url|web ?site|p[aàá]gina web|sitio web|lloc web|web address)\b", re.I),
            re.compile(r"https?://|www\.|\b[\w-]+\.(org|com|net|es|cat)\b")),
    "date": (re.compile(r"\b(when|what year|what date|cu[aá]ndo|en qu[eé] (a[nñ]o|fecha)|quan|en quin(a)? "
                        r"(any|data)|quina data|qu[eé] fecha|which year|in what year)\b", re.I),
             re.compile(r"\b(1[5-9]\d\d|20\d\d)\b|\b\d{1,2} (de )?[A-Za-zç]+ (de )?\d{4}\b")),
    "number": (re.compile(r"\b(how (many|much|long|big|old)|cu[aá]nt[oa]s?|quant[ae]?s?|what (number|percentage)"
                          r"|qu[eé] (n[uú]mero|porcentaje|tama[nñ]o)|quin (n[uú]mero|percentatge|mida))\b", re.I),
               re.compile(r"\d")),
}

ADDRESS_KINDS = ("email", "url")  # answers that a passage either holds or not, in any language


# Words that make a question a question: they say nothing of its subject, and passages rarely hold them.
ASKING = ("what which who whom whose when where why how must should can could would do does did "
           "qué que cuál cuáles quién quiénes cuándo dónde cómo cuánto cuántos cuánta cuántas puedo debo hay "
           "què quin quina quins quines qui quan on com quant quants quanta quantes puc he cal")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verifier's decision for one question: `answerable` when `probability` >= `threshold`."""

    answerable: bool
    probability: float
    threshold: float
    features: dict[str, float] = field(default_factory=dict)
    best_sentences: dict[str, str] = field(default_factory=dict)  # chunk id -> its sentence closest in meaning
    cross: bool = False  # the passages are in another language than the question (the cross-language weights)
    missing: str | None = None  # the kind of address asked for that no passage holds at all ("email", "url")
    # the passages' quotable sentences closest to the question in meaning, best first: (chunk id, sentence)
    closest: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"answerable": self.answerable, "probability": round(self.probability, 4),
                "threshold": round(self.threshold, 4), "cross_language": self.cross, "missing": self.missing,
                "features": {k: round(v, 4) for k, v in self.features.items()}}


@dataclass(frozen=True, slots=True)
class VerifierWeights:
    coef: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float
    trained_on: dict[str, Any] = field(default_factory=dict)
    cross: VerifierWeights | None = None  # for passages in another language than the question

    @classmethod
    def bundled(cls) -> VerifierWeights:
        data = json.loads(resources.files("app").joinpath("verifier.json").read_text(encoding="utf-8"))
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerifierWeights:
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"verifier weights are for features {data['features']}, this code computes {FEATURES}")
        cross = cls.from_dict({"features": data["features"], **data["cross"]}) if data.get("cross") else None
        return cls(tuple(data["coef"]), float(data["intercept"]), tuple(data["mean"]), tuple(data["scale"]),
                   float(data["threshold"]), data.get("trained_on", {}), cross)

    def to_dict(self) -> dict[str, Any]:
        out = {"features": list(FEATURES), "coef": list(self.coef), "intercept": self.intercept,
               "mean": list(self.mean), "scale": list(self.scale), "threshold": self.threshold,
               "trained_on": self.trained_on}
        if self.cross is not None:
            out["cross"] = {k: v for k, v in self.cross.to_dict().items() if k != "features"}
        return out


# A table of contents' dotted leader ("8.4 Actualitzar el format del paquet . . . . . 42").
_LEADER = re.compile(r"(?:\.\s?){5,}")


def _quotable(sentence: str) -> bool:
    """A sentence fit to show as the answer's quote: not a heading or a table of contents' line, and at least a
    few words."""
    return (not sentence.lstrip().startswith("#") and len(sentence.split()) >= 5
            and _LEADER.search(sentence) is None)


QUERY_KEY = "\x00question"  # the question's own vector among the sentence vectors (no sentence holds a NUL)
CLOSEST = 6  # sentences kept for choosing the quote of a bare citation (Assistant.choose_quote)
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|\n|$)")

Idf = Callable[[Sequence[str]], Sequence[float]]


class AnswerabilityVerifier:
    """(question, retrieved passages) -> Verdict. `idf` gives each index term's inverse document frequency."""

    def __init__(self, weights: VerifierWeights, idf: Idf, analyzers: Analyzers | None = None,
                 embedder: Embedder | None = None) -> None:
        self.weights = weights
        self.idf = idf
        self.analyzers = analyzers or Analyzers()
        # The index's encoder, for `sem_sentence`; without one the best passage's cosine stands in for it.
        self.embedder = embedder

    def sentences(self, question: str, hits: Sequence[Hit]) -> tuple[float, dict[str, str]]:
        """The cosine of the question and the passages' closest sentence, and each passage's closest one."""
        top, best, _ = self._sentences(question, hits)
        return top, best

    def _sentences(self, question: str, hits: Sequence[Hit], keep: int = CLOSEST,
                   vectors: dict[str, np.ndarray] | None = None
                   ) -> tuple[float, dict[str, str], tuple[tuple[str, str], ...]]:
        """sentences(), and the `keep` quotable sentences closest to the question over all passages.
        `vectors`: text -> embedding, already computed (the question under QUERY_KEY); filled with the new ones,
        so that reading the same passages made whole embeds only the sentences that changed."""
        spans = [(h.chunk.id, " ".join(h.chunk.text[a:b].split())) for h in hits
                 for a, b in split_sentences(h.chunk.text)]
        spans = [(cid, text) for cid, text in spans if len(text) >= MIN_SENTENCE_CHARS]
        if self.embedder is None or not spans:
            return max((h.relevance for h in hits), default=0.0), {}, ()
        vectors = {} if vectors is None else vectors
        new = sorted({text for _, text in spans} - vectors.keys())
        if new:
            vectors.update(zip(new, self.embedder.embed_documents(new), strict=True))
        if QUERY_KEY not in vectors:
            vectors[QUERY_KEY] = np.asarray(self.embedder.embed_query(question))
        q = vectors[QUERY_KEY]
        top, best, ranked = -1.0, dict[str, tuple[float, str]](), dict[str, tuple[float, str]]()
        for cid, text in spans:
            cos = float(vectors[text] @ q)
            top = max(top, cos)
            if _quotable(text) and (cid not in best or cos > best[cid][0]):
                best[cid] = (cos, text)
            if _quotable(text) and text not in ranked:
                ranked[text] = (cos, cid)
        closest = sorted(ranked.items(), key=lambda kv: -kv[1][0])[:keep]
        return top, {cid: text for cid, (_, text) in best.items()}, tuple((cid, text) for text, (_, cid) in closest)

    def features(self, question: str, hits: Sequence[Hit], language: str) -> dict[str, float]:
        return self._features(question, hits, language)[0]

    def _features(self, question: str, hits: Sequence[Hit], language: str,
                  vectors: dict[str, np.ndarray] | None = None
                  ) -> tuple[dict[str, float], dict[str, str], tuple[tuple[str, str], ...]]:
        sem, best, closest = self._sentences(question, hits, vectors=vectors) if hits else (0.0, {}, ())
        return {**self._lexical(question, hits, language), "sem_sentence": sem}, best, closest

    def _lexical(self, question: str, hits: Sequence[Hit], language: str) -> dict[str, float]:
        analyzer = self.analyzers.get(language)
        terms = sorted(set(analyzer.terms(question)) - set(analyzer.terms(ASKING)))
        relevances = sorted((h.relevance for h in hits), reverse=True) or [0.0]
        out = {"relevance": relevances[0],
               "relevance_gap": relevances[0] - (relevances[1] if len(relevances) > 1 else relevances[0])}
        if not terms or not hits:
            return {**out, "coverage": 0.0, "coverage_best": 0.0, "coverage_sentence": 0.0, "rarest_missing": 1.0,
                    "answer_type_missing": 0.0}
        weights = dict(zip(terms, (max(float(w), 0.0) for w in self.idf(terms)), strict=True))
        total = sum(weights.values()) or 1.0
        passage_terms = [set(analyzer.terms(h.chunk.index_text)) for h in hits]
        union = set().union(*passage_terms)
        out["coverage"] = sum(w for t, w in weights.items() if t in union) / total
        out["coverage_best"] = max(sum(w for t, w in weights.items() if t in p) / total for p in passage_terms)
        out["coverage_sentence"] = max(
            (sum(w for t, w in weights.items() if t in set(analyzer.terms(m.group()))) / total
             for h in hits for m in _SENTENCE.finditer(h.chunk.text)), default=0.0)
        top = max(weights.values()) or 1.0
        missing = [w for t, w in weights.items() if t not in union]
        out["rarest_missing"] = max(missing) / top if missing else 0.0
        present = {t: w for t, w in weights.items() if t in union}
        out["answer_type_missing"] = float(self._answer_type_missing(question, hits, present, analyzer))
        return out

    @staticmethod
    def _answer_type_missing(question: str, hits: Sequence[Hit], weights: dict[str, float], analyzer: Any) -> bool:
        """The question asks for a date, number, e-mail or web address and no sentence that names the
        question's subject (its rarest words that the passages hold) has one near it."""
        asked = [looks for asks, looks in ANSWER_TYPES.values() if asks.search(question)]
        if not asked:
            return False
        if not weights:
            return True
        subject = {t for t, _ in sorted(weights.items(), key=lambda kv: -kv[1])[:2]}
        for h in hits:
            text = h.chunk.text
            for m in _SENTENCE.finditer(text):
                window = text[max(0, m.start() - 200):m.end() + 200]
                if subject & set(analyzer.terms(m.group())) and any(p.search(window) for p in asked):
                    return False
        return True

    def probability(self, features: dict[str, float], cross: bool = False) -> float:
        w = self.weights_for(cross)
        z = w.intercept + sum(c * (features[f] - mu) / (s or 1.0)
                              for c, f, mu, s in zip(w.coef, FEATURES, w.mean, w.scale, strict=True))
        return 1.0 / (1.0 + math.exp(-z))

    def weights_for(self, cross: bool) -> VerifierWeights:
        """The cross-language weights for passages in another language (when shipped), else the main ones."""
        return self.weights.cross if cross and self.weights.cross is not None else self.weights

    @staticmethod
    def is_cross(hits: Sequence[Hit], language: str) -> bool:
        """Most of the passages whose language is known are in another language than the question."""
        known = [h.chunk.meta.get("language") for h in hits if h.chunk.meta.get("language")]
        return bool(known) and sum(lang != language for lang in known) * 2 > len(known)

    @staticmethod
    def absent_address(question: str, hits: Sequence[Hit]) -> str | None:
        """The question asks for an e-mail or web address and no passage holds one at all. Unlike the
        `answer_type_missing` feature this needs no word of the question in the passages, so it holds
        whatever their language (the cross-language weights barely read that feature)."""
        for kind in ADDRESS_KINDS:
            asks, looks = ANSWER_TYPES[kind]
            if asks.search(question) and not any(looks.search(h.chunk.text) for h in hits):
                return kind
        return None

    def verify(self, question: str, hits: Sequence[Hit], language: str,
               reading: Sequence[Hit] | None = None) -> Verdict:
        """Whether `hits` answer the question. `reading`: the same passages as the model will read them (made
        whole by the SentenceCompleter); the verdict's sentences to quote come from them, while the decision
        stays on the passages as retrieved, the text the weights were fitted on."""
        vectors: dict[str, np.ndarray] = {}
        features, best, closest = self._features(question, hits, language, vectors)
        if reading is not None and [h.chunk.text for h in reading] != [h.chunk.text for h in hits]:
            _, best, closest = self._sentences(question, reading, vectors=vectors)
        cross = self.is_cross(hits, language)
        p, threshold = self.probability(features, cross), self.weights_for(cross).threshold
        missing = self.absent_address(question, hits)
        return Verdict(p >= threshold and missing is None, p, threshold, features, best, cross, missing, closest)
