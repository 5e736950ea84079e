"""Passages that start or stop mid-sentence, made whole from the chunks beside them in their document.

The recursive chunker cuts near its size limit, at a line break when it can, and a PDF's lines break inside
sentences: a manual's sentence often ends at the cut with what the question asks for just after it ("... por
primera vez ejecutando: $" | "sudo pbuilder create"), or a passage opens mid-sentence ("manual a
/usr/share/man/man1 en lloc de ..."). What the model reads and what the answer quotes are then half a sentence.
`SentenceCompleter` appends to such a hit's text the next chunk's words up to the end of that sentence (or its
line, for a command), and prepends the previous chunk's words back to the start of a sentence opened
mid-way, each at most `max_chars` characters. The chunk keeps its id and page; its `start` and `end` move with
the added words, so citations still point at the document's own text.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

from retrieval.store import StoreReader
from retrieval.types import Chunk, Hit

# Text that already ends a sentence: . ! ? … or a closing quote or bracket after one.
_ENDED = re.compile(r"[.!?…][\"'»”’)\]]*\s*$")
# Where the continuation stops: a sentence end (punctuation then space) or a blank line.
_STOP = re.compile(r"[.!?…][\"'»”’)\]]*(?=\s)|\n\s*\n")
# Text that ends announcing what follows: a colon, or a colon and a shell prompt ("ejecutando: $").
ANNOUNCES = re.compile(r":\s*[$#]?\s*$")
_MAX_GAP = 2  # characters between two chunks (the line breaks the chunker dropped) that still join them
# Where a sentence starts in the words before a passage: after a sentence end and its space, or a blank line.
_STARTS = re.compile(r"[.!?…][\"'»”’)\]]*\s+|\n\s*\n\s*")


class SentenceCompleter:
    """Finds each chunk's neighbours in its document (built once per index generation) and completes hits."""

    def __init__(self, store: StoreReader, *, max_chars: int = 300) -> None:
        self.store = store
        self.max_chars = max_chars
        self._generation: int | None = None
        self._next: dict[str, Chunk] = {}
        self._previous: dict[str, Chunk] = {}
        self._lock = threading.Lock()

    def _neighbours(self) -> tuple[dict[str, Chunk], dict[str, Chunk]]:
        """Each chunk's next and previous chunk in its document, by chunk id."""
        with self._lock:
            generation = self.store.generation
            if generation != self._generation:
                by_document: dict[str, list[Chunk]] = defaultdict(list)
                for chunk in self.store.chunks():
                    by_document[chunk.document_id].append(chunk)
                successors: dict[str, Chunk] = {}
                predecessors: dict[str, Chunk] = {}
                for chunks in by_document.values():
                    chunks.sort(key=lambda c: (c.start, c.end))
                    for a, b in zip(chunks, chunks[1:], strict=False):
                        successors[a.id], predecessors[b.id] = b, a
                self._next, self._previous, self._generation = successors, predecessors, generation
            return self._next, self._previous

    def _joint(self, left: Chunk, right: Chunk) -> str | None:
        """The document's text from `left`'s start to `right`'s end: the two overlap, or a line break or two
        that the chunker dropped lies between them; None when they are apart or their texts disagree."""
        if right.start <= left.end:
            shared = right.text[:left.end - right.start]
            if not left.text.endswith(shared):
                return None  # not slices of one document text: leave them
            return left.text + right.text[left.end - right.start:]
        if right.start - left.end <= _MAX_GAP:
            return left.text + "\n" * (right.start - left.end) + right.text
        return None

    def continuation(self, chunk: Chunk) -> str:
        """The words after `chunk` up to the end of its last sentence (across the line breaks of a PDF's
        lines), or up to the end of the line after a chunk that ends announcing it ("ejecutando: $"); "" when
        it ends a sentence already, nothing reaches it, or the end is more than `max_chars` away."""
        if not chunk.text.strip() or _ENDED.search(chunk.text) or "window" in chunk.meta:
            return ""
        after = self._neighbours()[0].get(chunk.id)
        joint = self._joint(chunk, after) if after is not None and after.end > chunk.end else None
        if joint is None:
            return ""
        rest = joint[len(chunk.text):]
        if ANNOUNCES.search(chunk.text):
            line = re.match(r"\s*\S[^\n]*", rest)  # the command, on this line or the next
            return line.group().rstrip() if line is not None and line.end() <= self.max_chars else ""
        m = _STOP.search(rest)
        stop = m.end() if m is not None and m.group()[:1] != "\n" else (m.start() if m is not None else -1)
        return rest[:stop].rstrip() if 0 < stop <= self.max_chars else ""

    def beginning(self, chunk: Chunk) -> str:
        """The words before `chunk` back to the start of the sentence it opens mid-way (it starts with a
        lowercase letter); "" otherwise, or when no earlier chunk reaches it."""
        if not chunk.text.lstrip()[:1].islower() or "window" in chunk.meta:
            return ""
        before = self._neighbours()[1].get(chunk.id)
        joint = self._joint(before, chunk) if before is not None and before.start < chunk.start else None
        if before is None or joint is None:
            return ""
        head = joint[:chunk.start - before.start]
        starts = [m.end() for m in _STARTS.finditer(head)]
        if not starts and before.start > 0:
            return ""  # the sentence starts before the earlier chunk too
        start = starts[-1] if starts else 0
        return head[start:] if 0 < len(head) - start <= self.max_chars else ""

    def complete(self, hits: Sequence[Hit]) -> list[Hit]:
        """`hits` with each text that stops mid-sentence finished from its document's next chunk, and each that
        starts mid-sentence begun from its previous one."""
        out = []
        for hit in hits:
            chunk = hit.chunk
            more, before = self.continuation(chunk), self.beginning(chunk)
            if more.strip() or before.strip():
                whole = replace(chunk, text=before + chunk.text + more, start=chunk.start - len(before),
                                end=chunk.end + len(more))
                hit = replace(hit, chunk=whole)
            out.append(hit)
        return out
