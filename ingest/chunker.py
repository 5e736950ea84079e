"""Chunkers: a Document -> spans of its text, each later stamped with page and section metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ingest.document import Document


@dataclass(frozen=True, slots=True)
class Span:
    """A chunk's character range in the document text; `text` is document.text[start:end]."""

    start: int
    end: int
    text: str


class Chunker(Protocol):
    """Splits a document into spans; `settings_id` is recorded in the index."""

    settings_id: str

    def split(self, document: Document) -> list[Span]: ...


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
        for d in self._splitter.create_documents([document.text]):
            start = int(d.metadata["start_index"])
            text = d.page_content
            if start < 0 or document.text[start:start + len(text)] != text:
                found = document.text.find(text, spans[-1].start if spans else 0)
                if found < 0:
                    continue
                start = found
            if text.strip():
                spans.append(Span(start, start + len(text), text))
        return spans
