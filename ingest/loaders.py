"""Loaders: a file on disk -> a Document with page and section spans. One per format."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Protocol

from ingest.document import Document
from ingest.errors import FileFormatError

logger = logging.getLogger(__name__)


class Loader(Protocol):
    """Reads one file; raises FileFormatError naming the file and the reason when it cannot."""

    suffixes: tuple[str, ...]

    def load(self, path: Path) -> Document: ...


def _decode_text(path: Path, raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(raw).best()
        if best is not None:
            return str(best)
    except ImportError:  # pragma: no cover - charset-normalizer comes with requests
        pass
    return raw.decode("cp1252", errors="replace")


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def markdown_sections(text: str) -> list[tuple[int, str]]:
    """Heading hierarchy of a Markdown text as (offset, 'H1 > H2 > H3')."""
    stack: list[tuple[int, str]] = []
    out: list[tuple[int, str]] = []
    in_fence = False
    pos = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else _MD_HEADING.match(line.rstrip("\n"))
        if m:
            level, title = len(m.group(1)), m.group(2).strip()
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            out.append((pos, " > ".join(t for _, t in stack)))
        pos += len(line)
    return out


class TextLoader:
    suffixes = (".txt", ".text", ".log")

    def load(self, path: Path) -> Document:
        text = _decode_text(path, path.read_bytes())
        if not text.strip():
            raise FileFormatError(f"{path}: the file is empty")
        return Document(source=str(path), text=text, title=path.stem, meta={"format": "text"})


class MarkdownLoader:
    suffixes = (".md", ".markdown")

    def load(self, path: Path) -> Document:
        text = _decode_text(path, path.read_bytes())
        if not text.strip():
            raise FileFormatError(f"{path}: the file is empty")
        sections = markdown_sections(text)
        title = sections[0][1].split(" > ")[0] if sections else path.stem
        return Document(source=str(path), text=text, title=title, sections=sections, meta={"format": "markdown"})


class PdfLoader:
    """PDF text in reading order with 1-based page numbers; the outline (bookmarks) gives sections."""

    suffixes = (".pdf",)

    def __init__(self, max_pages: int = 5000) -> None:
        self.max_pages = max_pages

    def load(self, path: Path) -> Document:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(str(path))
            if reader.is_encrypted:
                try:
                    if not reader.decrypt(""):
                        raise FileFormatError(f"{path}: the PDF is encrypted with a password; "
                                              "remove the password and ingest it again")
                except NotImplementedError as e:
                    raise FileFormatError(f"{path}: the PDF's encryption is not supported ({e})") from e
            n_pages = len(reader.pages)
        except FileFormatError:
            raise
        except (PdfReadError, ValueError, OSError, KeyError, TypeError) as e:
            raise FileFormatError(f"{path}: not a readable PDF ({e})") from e
        if n_pages == 0:
            raise FileFormatError(f"{path}: the PDF has no pages")
        if n_pages > self.max_pages:
            raise FileFormatError(f"{path}: {n_pages} pages is over the limit of {self.max_pages} "
                                  "(CONSULTA_INGEST__MAX_PAGES)")
        parts: list[str] = []
        pages: list[tuple[int, int, int]] = []
        empty: list[int] = []
        pos = 0
        for i, page in enumerate(reader.pages, start=1):
            try:
                t = page.extract_text() or ""
            except Exception as e:  # noqa: BLE001 - pypdf raises many kinds on broken streams
                logger.warning("%s: page %d could not be read: %s", path, i, e)
                t = ""
            t = t.replace("\x00", "").strip()
            if not t:
                empty.append(i)
            if parts:
                parts.append("\n\n")
                pos += 2
            pages.append((i, pos, pos + len(t)))
            parts.append(t)
            pos += len(t)
        text = "".join(parts)
        if not text.strip():
            raise FileFormatError(f"{path}: no page has a text layer (a scanned PDF?); run OCR on it first")
        title = None
        try:
            meta = reader.metadata
            title = (meta.title if meta else None) or None
        except Exception:  # noqa: BLE001
            title = None
        doc = Document(source=str(path), text=text, title=(title or path.stem).strip(), pages=pages,
                       meta={"format": "pdf", "doc_pages": n_pages, "pages_without_text": empty})
        doc.sections = self._outline_sections(reader, doc)
        if empty:
            logger.warning("%s: %d of %d pages have no text layer: %s", path, len(empty), n_pages, empty[:20])
        return doc

    @staticmethod
    def _outline_sections(reader, doc: Document) -> list[tuple[int, str]]:
        out: list[tuple[int, int, str]] = []  # (page, depth-order, path)

        def walk(items, trail: list[str]) -> None:
            last: str | None = None
            for item in items:
                if isinstance(item, list):
                    if last is not None:
                        walk(item, [*trail, last])
                    continue
                try:
                    page_no = reader.get_destination_page_number(item) + 1
                    title = str(item.title).strip()
                except Exception:  # noqa: BLE001
                    continue
                last = title
                out.append((page_no, len(out), " > ".join([*trail, title])))

        try:
            walk(reader.outline, [])
        except Exception:  # noqa: BLE001 - broken outlines are common; sections are optional
            return []
        page_start = {p: s for p, s, _ in doc.pages}
        sections = [(page_start.get(p, 0), path) for p, _, path in sorted(out)]
        return sorted(sections, key=lambda s: s[0])


def default_loaders(max_pages: int = 5000) -> dict[str, Loader]:
    from ingest.office import DocxLoader, HtmlLoader  # imports this module's helpers

    loaders: list[Loader] = [PdfLoader(max_pages), MarkdownLoader(), TextLoader(), DocxLoader(), HtmlLoader()]
    return {suffix: loader for loader in loaders for suffix in loader.suffixes}
