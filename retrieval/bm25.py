"""BM25 over chunk texts (bm25s), with stopwords and Snowball stemming for English, Spanish and Catalan.

Each chunk is analysed in its own language (`meta["language"]`); a query is analysed in the language the
caller gives (the Retriever takes it from an injected detector). Analysis: NFKC, lower case, Catalan
`l·l` joined, words split at apostrophes, stopwords dropped, Snowball stem, accents folded, so that
"vacaciones", "vacación" and "vacacion" meet on one term.

The score matrix is built once, when an index generation is written, and saved in the generation's
`bm25/` folder; nothing is rebuilt per query.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Bump when the analysis changes: stored BM25 data made by another analyser is rebuilt on load.
ANALYZER_VERSION = 1
DEFAULT_LANGUAGE = "en"
# ISO 639-1 code -> Snowball algorithm (PyStemmer). Other languages are analysed without stemming.
STEMMERS = {"en": "english", "es": "spanish", "ca": "catalan"}

_WORD = re.compile(r"\w+")
_APOSTROPHES = re.compile(r"['’`´]")
_PUNT_VOLAT = re.compile(r"l[·.•]l")  # Catalan "col·lega" is also typed "col.lega" or "collega"
_META_FILE = "consulta.json"


@dataclass(frozen=True, slots=True)
class Bm25Params:
    """BM25 term-frequency saturation (k1) and length normalisation (b)."""

    k1: float = 0.9
    b: float = 0.4

    def __post_init__(self) -> None:
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1 (got k1={self.k1}, b={self.b})")


def _fold(word: str) -> str:
    """Remove accents: 'vacación' -> 'vacacion'."""
    if word.isascii():
        return word
    return "".join(ch for ch in unicodedata.normalize("NFKD", word) if not unicodedata.combining(ch))


def _stopwords(language: str) -> frozenset[str]:
    # bm25s carries the usual English and Spanish lists; Catalan comes from stopwords-iso.
    words: set[str] = set()
    if language == "en":
        from bm25s.stopwords import STOPWORDS_EN

        words = set(STOPWORDS_EN)
    elif language == "es":
        from bm25s.stopwords import STOPWORDS_SPANISH

        words = set(STOPWORDS_SPANISH)
    elif language == "ca":
        import stopwordsiso

        words = set(stopwordsiso.stopwords("ca"))
        words |= set("l d s m n t".split())  # elided articles and pronouns: l'empresa, d'acord
    words = {w.lower() for w in words}
    return frozenset(words | {_fold(w) for w in words})


class Analyzer:
    """Text -> index terms for one language. Thread-safe (PyStemmer objects are not, so stemming is locked)."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.stopwords = _stopwords(language)
        algorithm = STEMMERS.get(language)
        if algorithm is None:
            self._stemmer = None
        else:
            import Stemmer

            self._stemmer = Stemmer.Stemmer(algorithm)
        self._lock = threading.Lock()

    def words(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text).lower()
        text = _PUNT_VOLAT.sub("ll", _APOSTROPHES.sub(" ", text))
        return [w for w in _WORD.findall(text)
                if (len(w) > 1 or w.isdigit()) and w not in self.stopwords and "_" not in w]

    def terms(self, text: str) -> list[str]:
        words = self.words(text)
        if self._stemmer is not None and words:
            with self._lock:
                words = self._stemmer.stemWords(words)
        return [_fold(w) for w in words]


class Analyzers:
    """One Analyzer per language, made on first use."""

    def __init__(self) -> None:
        self._by_language: dict[str, Analyzer] = {}
        self._lock = threading.Lock()

    def get(self, language: str | None) -> Analyzer:
        language = (language or DEFAULT_LANGUAGE).lower()
        analyzer = self._by_language.get(language)
        if analyzer is None:
            with self._lock:
                analyzer = self._by_language.get(language)
                if analyzer is None:
                    if language not in STEMMERS:
                        logger.debug("no stemmer for language %r: BM25 uses plain words", language)
                    analyzer = self._by_language[language] = Analyzer(language)
        return analyzer


class Bm25Index:
    """The BM25 score matrix of a list of texts; rows are addressed by their position in that list."""

    def __init__(self, model, size: int, params: Bm25Params, analyzers: Analyzers | None = None) -> None:
        self._model = model  # bm25s.BM25, or None when there are no texts
        self.size = size
        self.params = params
        self.analyzers = analyzers or Analyzers()

    @classmethod
    def build(cls, texts: Sequence[str], languages: Sequence[str | None], params: Bm25Params,
              analyzers: Analyzers | None = None) -> Bm25Index:
        """Analyse every text in its language and compute the score matrix."""
        if len(texts) != len(languages):
            raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
        analyzers = analyzers or Analyzers()
        if not texts:
            return cls(None, 0, params, analyzers)
        import bm25s

        tokens = [analyzers.get(lang).terms(text) for text, lang in zip(texts, languages, strict=True)]
        model = bm25s.BM25(k1=params.k1, b=params.b, method="lucene")
        model.index(tokens, show_progress=False)
        return cls(model, len(texts), params, analyzers)

    def search(self, query: str, k: int, *, language: str | None = None,
               allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The k best (row, score) pairs with a positive score, best first; `allowed` is a boolean row mask."""
        if self._model is None or k <= 0:
            return []
        if allowed is not None and len(allowed) != self.size:
            raise ValueError(f"mask has {len(allowed)} rows, the index {self.size}")
        ids = self._model.get_tokens_ids(self.analyzers.get(language).terms(query))
        if not ids:
            return []
        scores = self._model.get_scores_from_ids(ids)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        rows = np.flatnonzero(scores > 0)
        if rows.size > k:
            rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
        rows = rows[np.lexsort((rows, -scores[rows]))]  # best first; ties in row order
        return [(int(r), float(scores[r])) for r in rows]

    # ---- persistence -----------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the matrix and vocabulary into `folder` (the caller fsyncs and publishes it)."""
        folder.mkdir(parents=True, exist_ok=True)
        if self._model is not None:
            self._model.save(str(folder), show_progress=False)
        meta = {"analyzer": ANALYZER_VERSION, "k1": self.params.k1, "b": self.params.b, "size": self.size}
        (folder / _META_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path, params: Bm25Params, size: int,
             analyzers: Analyzers | None = None) -> Bm25Index | None:
        """The saved index, or None when it is missing or was made with other parameters or another analyser."""
        try:
            meta = json.loads((folder / _META_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if (meta.get("analyzer"), meta.get("k1"), meta.get("b"), meta.get("size")) != (
                ANALYZER_VERSION, params.k1, params.b, size):
            logger.info("BM25 data in %s was made with %s, not analyzer %d k1=%s b=%s for %d chunks; rebuilding",
                        folder, meta, ANALYZER_VERSION, params.k1, params.b, size)
            return None
        if size == 0:
            return cls(None, 0, params, analyzers)
        import bm25s

        model = bm25s.BM25.load(str(folder), show_progress=False)
        return cls(model, size, params, analyzers)
