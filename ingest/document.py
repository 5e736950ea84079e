"""The Document record that loaders produce and chunkers consume."""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any


def document_id_for(collection: str, source: str) -> str:
    """A document is identified by its collection and path; its content hash tells versions apart."""
    return hashlib.sha256(f"{collection}\x00{source}".encode()).hexdigest()[:20]


@dataclass(slots=True)
class Document:
    """A document's full text with the spans that map character offsets back to pages and sections.

    pages:    (page_number, start, end) in text order, page numbers 1-based
    sections: (start, "Heading > Subheading") in text order; the section at an offset is the last one
              that starts at or before it
    """

    source: str
    text: str
    title: str | None = None
    pages: list[tuple[int, int, int]] = field(default_factory=list)
    sections: list[tuple[int, str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def page_at(self, offset: int) -> int | None:
        if not self.pages:
            return None
        starts = [p[1] for p in self.pages]
        i = max(0, bisect.bisect_right(starts, offset) - 1)
        return self.pages[i][0]

    def section_at(self, offset: int) -> str | None:
        if not self.sections:
            return None
        starts = [s[0] for s in self.sections]
        i = bisect.bisect_right(starts, offset) - 1
        return self.sections[i][1] if i >= 0 else None


_AUTHORING_PREFIX = re.compile(r"^(microsoft (word|excel|powerpoint)|untitled|document)\s*-\s*", re.IGNORECASE)
_FILE_SUFFIX = re.compile(r"\.(docx?|pdf|xlsx?|pptx?|odt|rtf|txt|exe)$", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]{3,}")


def _words(text: str) -> str:
    """Lower-case words only, for telling whether a title merely repeats the file name or the section."""
    return " ".join(re.findall(r"[^\W_]+", text.casefold()))


def _readable_name(source: str) -> str:
    """A file name as words: "3M_2018_10K.pdf" -> "3M 2018 10K"; a name without letters (a number a system
    gave it) says nothing and is left out."""
    name = " ".join(re.split(r"[_\-.\s]+", PurePath(source).stem)).strip()
    return name if re.search(r"[^\W\d_]", name) else ""


def _meaningful_title(title: str | None) -> str | None:
    """A document's own title, unless it is a tool's placeholder ("Microsoft Word - x.doc", an SEC accession
    number, "10811.exe"): it must hold a word of three letters or more once such wrapping is removed."""
    t = _FILE_SUFFIX.sub("", _AUTHORING_PREFIX.sub("", " ".join((title or "").split())))
    return t if _WORD.search(t) else None


def display_title(source: str, title: str | None) -> str:
    """The title a citation shows: the document's own, unless it is a tool's placeholder (then the file name)."""
    return _meaningful_title(title) or PurePath(source).stem


def context_line(source: str, title: str | None, section: str | None, limit: int = 240) -> str:
    """The line indexed before each chunk's text: file name, the document's title, the section path.

    Organisations name files for what they are ("Travel_policy_2024.pdf"), titles say it again or better,
    and a passage in the middle of a manual rarely repeats either; so search sees them with every chunk.
    """
    name = _readable_name(source)
    parts = [name] if name else []
    own = _meaningful_title(title)
    if own and f" {_words(own)} " not in f" {_words(name)} " \
            and not f"{_words(section or '')} ".startswith(f"{_words(own)} "):
        parts.append(own)
    if section:
        parts.append(" ".join(section.split()))
    line = " · ".join(parts)
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0]
