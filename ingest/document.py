"""The Document record that loaders produce and chunkers consume."""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
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
