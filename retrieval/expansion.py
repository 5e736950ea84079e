"""Query expansion before retrieval: lexical (synonyms, pseudo-relevance feedback), multi-query rewriting,
HyDE and decomposition of multi-part questions. Each is optional; the Retriever merges what they produce.

The LLM-backed expanders take a `generate(prompt, max_tokens) -> str` callable (the composition root wires
it to the local engine, greedy); retrieval imports nothing of ours. What each one costs and adds is in
docs/benchmarks/retrieval.md (bench/retrieval.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

GenerateFn = Callable[[str, int], str]

_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)]|(?:query|consulta|pregunta|question)\s*\d*\s*:)\s*", re.I)
_QUESTION_END = re.compile(r"(?<=\?)\s+")  # small models put several questions on one line


@dataclass(frozen=True, slots=True)
class Expansion:
    """What the expanders made of a query: extra queries (searched in both modes and fused), a hypothetical
    passage (embedded as a passage, dense only), and extra BM25 words."""

    queries: tuple[str, ...] = ()
    passages: tuple[str, ...] = ()
    lexical: str = ""
    sub_queries: tuple[str, ...] = field(default=())  # from decomposition: each must be represented


class QueryExpander:
    """Runs the configured expanders on a query. Every part is optional; with none it costs nothing."""

    def __init__(self, *, generate: GenerateFn | None = None, synonyms: Mapping[str, Sequence[str]] | None = None,
                 multi_query: int = 0, hyde: bool = False, decompose: bool = False,
                 max_tokens: int = 96) -> None:
        if (multi_query or hyde or decompose) and generate is None:
            raise ValueError("multi-query, HyDE and decomposition need the local LLM (a generate callable)")
        self.generate = generate
        self.synonyms = {k.casefold(): tuple(v) for k, v in (synonyms or {}).items()}
        self.multi_query = multi_query
        self.hyde = hyde
        self.decompose = decompose
        self.max_tokens = max_tokens

    @property
    def active(self) -> bool:
        return bool(self.synonyms or self.multi_query or self.hyde or self.decompose)

    @staticmethod
    def load_synonyms(path: str | Path) -> dict[str, list[str]]:
        """A JSON file {"word or phrase": ["synonym", ...]}: the organisation's own vocabulary."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object mapping words to lists of synonyms")
        return {str(k): [str(x) for x in v] for k, v in data.items()}

    def expand(self, query: str) -> Expansion:
        lexical = self._synonyms(query)
        queries: list[str] = []
        passages: list[str] = []
        subs: list[str] = []
        if self.decompose:
            subs = [q for q in self._sub_questions(query) if q.casefold() != query.casefold()]
        if self.multi_query:
            queries = self._rewrites(query)
        if self.hyde:
            passage = self._ask(HYDE_PROMPT.format(question=query), self.max_tokens).strip()
            if passage:
                passages.append(passage)
        return Expansion(tuple(queries), tuple(passages), lexical, tuple(subs))

    # ---- the parts -------------------------------------------------------------------------
    def _synonyms(self, query: str) -> str:
        folded = query.casefold()
        words = set(re.findall(r"\w+", folded))
        extra = [syn for key, syns in self.synonyms.items()
                 if (key in words if " " not in key else key in folded) for syn in syns]
        return " ".join(extra)

    def _ask(self, prompt: str, max_tokens: int) -> str:
        assert self.generate is not None
        try:
            return self.generate(prompt, max_tokens)
        except Exception as e:  # an expansion is an extra: a failing model must not fail the search
            logger.warning("query expansion failed (%s); searching with the question alone", e)
            return ""

    def _lines(self, text: str, limit: int) -> list[str]:
        out = []
        for line in (part for row in text.splitlines() for part in _QUESTION_END.split(row)):
            line = _LIST_ITEM.sub("", line).strip().strip('"')
            if len(line) > 3 and line not in out:
                out.append(line)
        return out[:limit]

    def _rewrites(self, query: str) -> list[str]:
        text = self._ask(MULTI_QUERY_PROMPT.format(n=self.multi_query, question=query), self.max_tokens)
        return self._lines(text, self.multi_query)

    def _sub_questions(self, query: str) -> list[str]:
        text = self._ask(DECOMPOSE_PROMPT.format(question=query), self.max_tokens)
        subs = self._lines(text, 4)
        return subs if len(subs) > 1 else []


MULTI_QUERY_PROMPT = (
    "Write {n} different search queries that would find passages answering the question below. Use other "
    "words and synonyms, keep the question's language, one query per line, nothing else.\n\nQuestion: {question}")
HYDE_PROMPT = (
    "Write a short passage (two or three sentences), in the language of the question, that answers it as an "
    "encyclopedia or a company handbook would. Write only the passage.\n\nQuestion: {question}")
DECOMPOSE_PROMPT = (
    "If the question below asks about several different things, split it into simple questions, one per "
    "line, in the question's language. If it asks one thing, repeat it unchanged on one line. Write only the "
    "questions.\n\nQuestion: {question}")
