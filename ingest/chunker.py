"""Chunkers: a Document -> spans of its text, each later stamped with page and section metadata.

Four methods, chosen by `ingest.chunker`:

- recursive        langchain-text-splitters' recursive splitter, the baseline;
- semantic         split where the embedding distance between consecutive sentences jumps, within token bounds;
- double_pass      semantic, then a second pass that merges a chunk with the next one, or the one after it, when
                   they are about the same topic; a merged chunk keeps every span it is made of;
- sentence_window  one chunk per sentence (what is embedded and searched), carrying the text of its neighbours
                   (what the generator is given).

Every chunker keeps pages and sections apart: a chunk never spans two pages or two sections, so each cites
exactly one page and one section path.
Token counts are estimated as characters / 4 (multilingual-e5's tokenizer gives 3.5-4.5 on our PDFs).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ingest.document import Document

CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Span:
    """A chunk's character range in the document text; `text` is document.text[start:end].

    A merged chunk (double-pass) is made of several ranges: `parts` lists them, `text` joins their texts
    with a blank line, and start/end are the first start and the last end.
    `meta` carries what a chunker adds for the generator (the sentence window and its offsets).
    """

    start: int
    end: int
    text: str
    parts: tuple[tuple[int, int], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


class Chunker(Protocol):
    """Splits a document into spans; `settings_id` is recorded in the index (changing it needs a reindex)."""

    settings_id: str

    def split(self, document: Document) -> list[Span]: ...


def page_segments(document: Document) -> list[tuple[int, int]]:
    """The ranges a chunk must stay inside: each page (or the whole text for formats without pages), cut
    again where a section starts, so that a chunk cites one page and one section."""
    pages = [(s, e) for _p, s, e in document.pages if e > s] if document.pages else [(0, len(document.text))]
    cuts = sorted({offset for offset, _path in document.sections})
    segments: list[tuple[int, int]] = []
    for start, end in pages:
        inner = [c for c in cuts if start < c < end]
        for a, b in zip([start, *inner], [*inner, end], strict=True):
            if document.text[a:b].strip():
                segments.append((a, b))
    return segments


def tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


class RecursiveChunker:
    """langchain-text-splitters' recursive splitter (paragraphs, then lines, sentences, words), with offsets."""

    def __init__(self, chunk_size: int = 1000, chunk_overlap: int = 150) -> None:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        if chunk_overlap >= chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        self.settings_id = f"recursive:{chunk_size}:{chunk_overlap}"
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True,
            separators=["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""], keep_separator="end",
        )

    def split(self, document: Document) -> list[Span]:
        spans: list[Span] = []
        for seg_start, seg_end in page_segments(document):
            spans.extend(self._split_text(document.text[seg_start:seg_end], seg_start))
        return spans

    def _split_text(self, text: str, base: int) -> list[Span]:
        spans: list[Span] = []
        for d in self._splitter.create_documents([text]):
            start = int(d.metadata["start_index"])
            piece = d.page_content
            if start < 0 or text[start:start + len(piece)] != piece:
                found = text.find(piece, spans[-1].start - base if spans else 0)
                if found < 0:
                    continue
                start = found
            if not piece.strip():
                continue
            if spans and _only_headings(spans[-1].text):  # a heading goes with the text under it
                head = spans.pop()
                spans.append(Span(head.start, base + start + len(piece), text[head.start - base:start + len(piece)]))
            else:
                spans.append(Span(base + start, base + start + len(piece), piece))
        return spans


_HEADING = re.compile(r"#{1,6}\s\S.*")


def _only_headings(text: str) -> bool:
    """A piece of Markdown that is nothing but headings ("## Adding documents"): no chunk of its own."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return bool(lines) and all(_HEADING.fullmatch(line) for line in lines)


# A sentence ends at . ! ? … (with closing quotes/brackets) before whitespace, at a blank line, or at a line
# break that does not continue a sentence (the previous line ends in neither a lowercase letter nor , ; -),
# which is how PDF table rows and list items come out.
_SENT_END = re.compile(r"[.!?…][\"'”’)\]]*\s+|\n\s*\n\s*|(?<![a-zà-ÿ,;\-])\n\s*")


def sentence_spans(text: str, base: int = 0, max_chars: int = 600) -> list[tuple[int, int]]:
    """Sentence ranges of `text` (offsets + base), whitespace trimmed; long ones cut at spaces."""
    out: list[tuple[int, int]] = []
    pos = 0
    for m in [*_SENT_END.finditer(text), None]:
        end = m.end() if m else len(text)
        s, e = pos, end
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        while e - s > max_chars:  # a run-on line (a table flattened by the PDF): cut at the last space
            cut = text.rfind(" ", s + max_chars // 2, s + max_chars)
            cut = cut if cut > s else s + max_chars
            out.append((base + s, base + cut))
            s = cut
            while s < e and text[s].isspace():
                s += 1
        if e > s:
            out.append((base + s, base + e))
        pos = end
    return out


class SemanticChunker:
    """Split where the embedding distance between consecutive sentences jumps, within token bounds.

    Each sentence is embedded (with the index's own embedder); a chunk ends where the cosine distance to the
    next sentence is above the `percentile`-th percentile of the document's distances (once the chunk holds
    `min_tokens`), or where adding the next sentence would pass `max_tokens`.
    """

    method = "semantic"

    def __init__(self, embedder: Any, *, max_tokens: int = 200, min_tokens: int = 40,
                 percentile: float = 90.0) -> None:
        if not 0 <= min_tokens < max_tokens:
            raise ValueError("need 0 <= min_tokens < max_tokens")
        self.embedder = embedder
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self.percentile = percentile
        self.settings_id = f"{self.method}:{max_tokens}:{min_tokens}:{percentile:g}:{embedder.model_id}"

    def _sentences(self, document: Document) -> tuple[list[list[tuple[int, int]]], np.ndarray]:
        """Sentences per page segment, and one unit vector per sentence (all segments, in order)."""
        segs = [sentence_spans(document.text[s:e], s, max_chars=self.max_tokens * CHARS_PER_TOKEN)
                for s, e in page_segments(document)]
        flat = [document.text[s:e] for seg in segs for s, e in seg]
        vectors = self.embedder.embed_documents(flat) if flat else np.zeros((0, 1), dtype=np.float32)
        return segs, np.asarray(vectors, dtype=np.float32)

    def _groups(self, document: Document) -> list[tuple[list[tuple[int, int]], np.ndarray]]:
        """First pass: (sentence ranges, mean unit vector) of each chunk, in text order."""
        segs, vectors = self._sentences(document)
        distances: list[np.ndarray] = []
        i = 0
        for seg in segs:
            v = vectors[i:i + len(seg)]
            distances.append(1.0 - np.sum(v[:-1] * v[1:], axis=1) if len(seg) > 1 else np.zeros(0))
            i += len(seg)
        every = np.concatenate(distances) if distances else np.zeros(0)
        threshold = float(np.percentile(every, self.percentile)) if every.size else 1.0
        groups: list[tuple[list[tuple[int, int]], np.ndarray]] = []
        i = 0
        for seg, dist in zip(segs, distances, strict=True):
            current: list[int] = []
            for j, (_s, e) in enumerate(seg):
                if current:
                    size = tokens(document.text[seg[current[0]][0]:seg[j - 1][1]])
                    grown = tokens(document.text[seg[current[0]][0]:e])
                    if (dist[j - 1] >= threshold and size >= self.min_tokens) or grown > self.max_tokens:
                        groups.append(self._group(seg, current, vectors, i))
                        current = []
                current.append(j)
            if current:
                groups.append(self._group(seg, current, vectors, i))
            i += len(seg)
        return groups

    @staticmethod
    def _group(seg, members, vectors, offset):
        v = vectors[[offset + j for j in members]].mean(axis=0)
        v = v / (np.linalg.norm(v) or 1.0)
        return [seg[j] for j in members], v

    def split(self, document: Document) -> list[Span]:
        spans = []
        for sents, _v in self._groups(document):
            s, e = sents[0][0], sents[-1][1]
            spans.append(Span(s, e, document.text[s:e]))
        return spans


class DoublePassChunker(SemanticChunker):
    """Semantic chunking, then a second pass that merges chunks about the same topic.

    A chunk is merged with the next one when their cosine is at least `merge_threshold`; otherwise with the
    one after it, if that one is close enough (the lectures' example: "The blue, the red." and "Gray and
    white." end up together across "Football and Tennis.", which stays a chunk of its own). Merging stops at
    `max_tokens` and at page and section boundaries. A merged chunk lists its ranges in Span.parts.
    """

    method = "double_pass"

    def __init__(self, embedder: Any, *, max_tokens: int = 200, min_tokens: int = 40, percentile: float = 90.0,
                 merge_threshold: float = 0.875) -> None:
        super().__init__(embedder, max_tokens=max_tokens, min_tokens=min_tokens, percentile=percentile)
        self.merge_threshold = merge_threshold
        self.settings_id += f":{merge_threshold:g}"

    def merge(self, text: str, chunks: Sequence[tuple[int, int, np.ndarray]],
              segment_of: Sequence[int] | None = None) -> list[list[int]]:
        """Second pass over (start, end, unit vector) chunks in text order: lists of merged chunk indices.

        Chunks merge only within one segment (`segment_of`: the page-and-section range each lies in).
        """
        n = len(chunks)
        segment_of = segment_of or [0] * n
        used = [False] * n
        merged: list[list[int]] = []
        for i in range(n):
            if used[i]:
                continue
            used[i] = True
            group = [i]
            vec = chunks[i][2].astype(np.float64)
            size = tokens(text[chunks[i][0]:chunks[i][1]])
            last = i
            while True:
                took = False
                for cand in (last + 1, last + 2):
                    if cand >= n or used[cand] or segment_of[cand] != segment_of[i]:
                        continue
                    t = tokens(text[chunks[cand][0]:chunks[cand][1]])
                    centroid = vec / (np.linalg.norm(vec) or 1.0)
                    if size + t <= self.max_tokens and float(centroid @ chunks[cand][2]) >= self.merge_threshold:
                        used[cand] = True
                        group.append(cand)
                        vec = vec + chunks[cand][2]
                        size += t
                        last = cand
                        took = True
                        break
                if not took:
                    break
            merged.append(sorted(group))
        return merged

    def split(self, document: Document) -> list[Span]:
        groups = self._groups(document)
        chunks = [(sents[0][0], sents[-1][1], v) for sents, v in groups]
        segments = page_segments(document)
        starts = [a for a, _b in segments]
        segment_of = [bisect.bisect_right(starts, s) - 1 for s, _e, _v in chunks]
        spans = []
        for members in self.merge(document.text, chunks, segment_of):
            parts = tuple((chunks[m][0], chunks[m][1]) for m in members)
            text = "\n\n".join(document.text[s:e] for s, e in parts)
            spans.append(Span(parts[0][0], parts[-1][1], text, parts if len(parts) > 1 else ()))
        return sorted(spans, key=lambda s: s.start)


class SentenceWindowChunker:
    """One chunk per sentence, with the `window` sentences either side in meta (window, window_start/end).

    The sentence is what gets embedded and searched; the assistant gives the generator the window.
    Sentences shorter than `min_chars` are joined to the next one, so a lone "2018" is not a chunk.
    """

    def __init__(self, window: int = 2, min_chars: int = 40, max_chars: int = 600) -> None:
        self.window = window
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.settings_id = f"sentence_window:{window}:{min_chars}:{max_chars}"

    def split(self, document: Document) -> list[Span]:
        text = document.text
        spans: list[Span] = []
        for seg_start, seg_end in page_segments(document):
            sents: list[tuple[int, int]] = []
            for s, e in sentence_spans(text[seg_start:seg_end], seg_start, self.max_chars):
                if sents and sents[-1][1] - sents[-1][0] < self.min_chars and e - sents[-1][0] <= self.max_chars:
                    sents[-1] = (sents[-1][0], e)
                else:
                    sents.append((s, e))
            for i, (s, e) in enumerate(sents):
                ws, we = sents[max(0, i - self.window)][0], sents[min(len(sents) - 1, i + self.window)][1]
                spans.append(Span(s, e, text[s:e], meta={"window": text[ws:we], "window_start": ws,
                                                          "window_end": we}))
        return spans


def build_chunker(name: str, *, embedder: Any = None, chunk_size: int = 800, chunk_overlap: int = 120,
                  max_tokens: int = 200, min_tokens: int = 40, percentile: float = 90.0,
                  merge_threshold: float = 0.875, window: int = 2) -> Chunker:
    """The chunker called `name` (the values of the `ingest.chunker` setting)."""
    match name:
        case "recursive":
            return RecursiveChunker(chunk_size, chunk_overlap)
        case "semantic":
            return SemanticChunker(embedder, max_tokens=max_tokens, min_tokens=min_tokens, percentile=percentile)
        case "double_pass":
            return DoublePassChunker(embedder, max_tokens=max_tokens, min_tokens=min_tokens, percentile=percentile,
                                     merge_threshold=merge_threshold)
        case "sentence_window":
            return SentenceWindowChunker(window)
    raise ValueError(f"unknown chunker {name!r} (recursive, semantic, double_pass, sentence_window)")
