"""BM25 over chunk texts (term counts in a scipy sparse matrix), with stopwords and Snowball stemming for English,
Spanish and Catalan.

Each chunk is analysed in its own language (`meta["language"]`); a query is analysed in the language the
caller gives (the Retriever takes it from an injected detector). Analysis: NFKC, lower case, Catalan
`l·l` joined, words split at apostrophes, stopwords dropped, Snowball stem, accents folded, so that
"vacaciones", "vacación" and "vacacion" meet on one term.

The index is a term-count matrix updated incrementally as chunks are added and deleted (only new
texts are analysed), saved with each index generation in its `bm25/` folder; nothing is rebuilt per
query, and a query touches only the columns of its own terms.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

logger = logging.getLogger(__name__)

# Bump when the analysis changes: stored BM25 data made by another analyser is rebuilt on load.
ANALYZER_VERSION = 3  # 2: term counts (scipy) instead of a bm25s score matrix; 3: words joined by _ kept
DEFAULT_LANGUAGE = "en"
# ISO 639-1 code -> Snowball algorithm (PyStemmer). Other languages are analysed without stemming.
STEMMERS = {"en": "english", "es": "spanish", "ca": "catalan"}

_WORD = re.compile(r"\w+")
_APOSTROPHES = re.compile(r"['’`´]")
_PUNT_VOLAT = re.compile(r"l[·.•]l")  # Catalan "col·lega" is also typed "col.lega" or "collega"
_META_FILE = "consulta.json"
_MATRIX_FILE = "tf.npz"
_VOCAB_FILE = "vocab.json"


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
        """Lower-cased words without stopwords. A word joined by underscores (`dh_make`, `MAX_FILE_MB`: commands,
        settings, file names in technical documents) is kept whole and also gives its parts; a run of
        underscores alone (a form's blank) is no word. (Splitting words that mix letters and digits as well,
        "FY2022" -> "fy", "2022", lost 0.015-0.022 nDCG@10 on FinanceBench-dev and nothing elsewhere, so it
        is not done.)"""
        text = unicodedata.normalize("NFKC", text).lower()
        text = _PUNT_VOLAT.sub("ll", _APOSTROPHES.sub(" ", text))
        out = []
        for w in _WORD.findall(text):
            w = w.strip("_")
            if not w:
                continue
            out.append(w)
            if "_" in w:
                out += [p for p in w.split("_") if p]
        return [w for w in out if (len(w) > 1 or w.isdigit()) and w not in self.stopwords]

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
    """BM25 over a list of texts, kept as a term-frequency matrix that grows and shrinks with the chunks.

    Rows are addressed by their position in the list. Adding texts analyses only the new texts (their
    rows are appended); deleting keeps the surviving rows. Nothing is re-analysed after ingestion, and
    k1, b, document frequencies and the average length apply at query time, so they always match the
    live chunks (Lucene's BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b + b dl/avgdl))).
    A query reads only the columns of its own terms.
    """

    def __init__(self, params: Bm25Params, analyzers: Analyzers | None = None) -> None:
        self.params = params
        self.analyzers = analyzers or Analyzers()
        self._vocab: dict[str, int] = {}
        self._tf = sparse.csr_matrix((0, 0), dtype=np.float32)  # rows: texts, columns: terms
        self._pending: list[sparse.csr_matrix] = []  # rows added since the last consolidation
        self._lengths = np.zeros(0, dtype=np.float32)
        self._csc: sparse.csc_matrix | None = None
        self._lock = threading.Lock()
        self.texts_analysed = 0  # texts run through the analyser by this object (loads count none)

    @property
    def size(self) -> int:
        return int(self._lengths.size)

    @classmethod
    def build(cls, texts: Sequence[str], languages: Sequence[str | None], params: Bm25Params,
              analyzers: Analyzers | None = None) -> Bm25Index:
        """Analyse every text in its language."""
        index = cls(params, analyzers)
        index.add(texts, languages)
        return index

    def add(self, texts: Sequence[str], languages: Sequence[str | None]) -> None:
        """Append rows for these texts; only they are analysed."""
        if len(texts) != len(languages):
            raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
        if not texts:
            return
        indptr: list[int] = [0]
        cols: list[int] = []
        counts: list[int] = []
        for text, lang in zip(texts, languages, strict=True):
            tf: dict[int, int] = {}
            for term in self.analyzers.get(lang).terms(text):
                col = self._vocab.setdefault(term, len(self._vocab))
                tf[col] = tf.get(col, 0) + 1
            cols.extend(tf)
            counts.extend(tf.values())
            indptr.append(len(cols))
        block = sparse.csr_matrix((np.asarray(counts, dtype=np.float32), np.asarray(cols, dtype=np.int32),
                                   np.asarray(indptr, dtype=np.int64)), shape=(len(texts), len(self._vocab)))
        with self._lock:
            self._pending.append(block)
            self._lengths = np.concatenate([self._lengths, np.asarray(block.sum(axis=1)).ravel()])
            self._csc = None
        self.texts_analysed += len(texts)

    def keep(self, rows: np.ndarray) -> None:
        """Keep only these rows (in this order): what remains after deleting chunks."""
        rows = np.asarray(rows, dtype=np.int64)
        with self._lock:
            tf = self._consolidated()
            self._tf = tf[rows]
            self._lengths = self._lengths[rows]
            self._csc = None

    def _consolidated(self) -> sparse.csr_matrix:
        """The whole matrix (call with the lock held); pending rows are stacked once, not per add."""
        width = len(self._vocab)
        if self._pending:
            parts = [m if m.shape[1] == width else _widen(m, width) for m in [self._tf, *self._pending]]
            self._tf = sparse.vstack(parts, format="csr", dtype=np.float32)
            self._pending = []
        elif self._tf.shape[1] != width:
            self._tf = _widen(self._tf, width)
        return self._tf

    def _columns(self) -> sparse.csc_matrix:
        with self._lock:
            if self._csc is None:
                self._csc = self._consolidated().tocsc()
                self._csc.sort_indices()
            return self._csc

    def search(self, query: str, k: int, *, language: str | None = None,
               allowed: np.ndarray | None = None, boost: Mapping[str, float] | None = None) -> list[tuple[int, float]]:
        """The k best (row, score) pairs with a positive score, best first; `allowed` is a boolean row mask.

        `boost` adds already-analysed terms with a weight each (query expansion: feedback terms, synonyms).
        """
        n = self.size
        if n == 0 or k <= 0:
            return []
        if allowed is not None and len(allowed) != n:
            raise ValueError(f"mask has {len(allowed)} rows, the index {n}")
        weights: dict[int, float] = {}
        for t in self.analyzers.get(language).terms(query):
            if t in self._vocab:
                weights[self._vocab[t]] = weights.get(self._vocab[t], 0.0) + 1.0
        for t, w in (boost or {}).items():
            if t in self._vocab:
                weights[self._vocab[t]] = weights.get(self._vocab[t], 0.0) + w
        if not weights:
            return []
        csc, lengths = self._columns(), self._lengths
        k1, b = self.params.k1, self.params.b
        avgdl = float(lengths.mean()) or 1.0
        scores = np.zeros(n, dtype=np.float32)
        for col, times in weights.items():
            lo, hi = csc.indptr[col], csc.indptr[col + 1]
            if lo == hi:
                continue
            rows, tf = csc.indices[lo:hi], csc.data[lo:hi]
            df = hi - lo
            idf = np.log1p((n - df + 0.5) / (df + 0.5))
            scores[rows] += times * idf * tf / (tf + k1 * (1 - b + b * lengths[rows] / avgdl))
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        rows = np.flatnonzero(scores > 0)
        if rows.size > k:
            rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
        rows = rows[np.lexsort((rows, -scores[rows]))]  # best first; ties in row order
        return [(int(r), float(scores[r])) for r in rows]

    def idf(self, terms: Sequence[str]) -> list[float]:
        """Each analysed term's inverse document frequency over the live rows (a term no row holds gets the
        highest: it is as rare as a term can be)."""
        csc, n = self._columns(), self.size
        out = []
        for t in terms:
            col = self._vocab.get(t)
            df = 0 if col is None or col >= csc.shape[1] else int(csc.indptr[col + 1] - csc.indptr[col])
            out.append(float(np.log1p((n - df + 0.5) / (df + 0.5))))
        return out

    def feedback_terms(self, query: str, rows: Sequence[int], n_terms: int = 10, *, language: str | None = None,
                       weight: float = 0.3) -> dict[str, float]:
        """Pseudo-relevance feedback (RM3-like): the terms that weigh most (tf * idf) in the top `rows`, not in
        the query, weighted `weight` for the best and less for the others; for `search(boost=...)`."""
        if not rows or n_terms <= 0:
            return {}
        with self._lock:
            tf = self._consolidated()
        csc = self._columns()
        n = self.size
        df = np.diff(csc.indptr).astype(np.float32)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        block = tf[np.asarray(rows, dtype=np.int64)]
        lengths = self._lengths[np.asarray(rows, dtype=np.int64)][:, None]
        mass = np.asarray(block.multiply(1.0 / np.maximum(lengths, 1.0)).sum(axis=0)).ravel() * idf
        for t in self.analyzers.get(language).terms(query):
            if t in self._vocab:
                mass[self._vocab[t]] = 0.0
        top = np.argsort(-mass)[:n_terms]
        top = top[mass[top] > 0]
        if not top.size:
            return {}
        terms = self._term_list()
        best = float(mass[top[0]])
        return {terms[int(c)]: weight * float(mass[c]) / best for c in top}

    def _term_list(self) -> list[str]:
        """Column number -> term (the vocabulary only grows, so a longer one means a stale list)."""
        cached = getattr(self, "_terms", None)
        if cached is None or len(cached) != len(self._vocab):
            cached = self._terms = sorted(self._vocab, key=self._vocab.__getitem__)
        return cached

    # ---- persistence -----------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the term counts and vocabulary into `folder` (the caller fsyncs and publishes it)."""
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            tf = self._consolidated()
            terms = self._term_list()
            with open(folder / _MATRIX_FILE, "wb") as f:
                np.savez(f, data=tf.data, indices=tf.indices, indptr=tf.indptr, lengths=self._lengths,
                         shape=np.asarray(tf.shape, dtype=np.int64))
        (folder / _VOCAB_FILE).write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        meta = {"analyzer": ANALYZER_VERSION, "size": self.size, "terms": len(terms)}
        (folder / _META_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path, params: Bm25Params, size: int,
             analyzers: Analyzers | None = None) -> Bm25Index | None:
        """The saved index, or None when it is missing, or was made by another analyser or for other chunks.

        k1 and b are not stored: they apply at query time, so changing them needs no rebuild.
        """
        try:
            meta = json.loads((folder / _META_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if (meta.get("analyzer"), meta.get("size")) != (ANALYZER_VERSION, size):
            logger.info("BM25 data in %s was made with %s, not analyzer %d for %d chunks; rebuilding",
                        folder, meta, ANALYZER_VERSION, size)
            return None
        terms = json.loads((folder / _VOCAB_FILE).read_text(encoding="utf-8"))
        with np.load(folder / _MATRIX_FILE) as z:
            shape = tuple(int(x) for x in z["shape"])
            tf = sparse.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            lengths = z["lengths"].astype(np.float32)
        if shape != (size, len(terms)) or lengths.size != size:
            raise ValueError(f"BM25 data in {folder} has shape {shape} for {size} chunks and {len(terms)} terms")
        index = cls(params, analyzers)
        index._vocab = {t: i for i, t in enumerate(terms)}
        index._tf, index._lengths = tf, lengths
        return index


def _widen(m: sparse.csr_matrix, width: int) -> sparse.csr_matrix:
    """The same rows with more (empty) term columns: the vocabulary grew after they were added."""
    return sparse.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], width))
