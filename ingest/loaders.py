"""Loaders: a file on disk -> a Document with page and section spans. One per format."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Protocol

from ingest.document import Document
from ingest.errors import FileFormatError
from ingest.office import DocxLoader, HtmlLoader
from ingest.text import decode_text, markdown_table

logger = logging.getLogger(__name__)


class Loader(Protocol):
    """Reads one file; raises FileFormatError naming the file and the reason when it cannot."""

    suffixes: tuple[str, ...]

    def load(self, path: Path) -> Document: ...


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
    suffixes: tuple[str, ...] = (".txt", ".text", ".log")

    def load(self, path: Path) -> Document:
        text, encoding = decode_text(path.read_bytes())
        if not text.strip():
            raise FileFormatError(f"{path}: the file is empty", "empty")
        return Document(source=str(path), text=text, title=path.stem, meta={"format": "text", "encoding": encoding})


class MarkdownLoader:
    suffixes: tuple[str, ...] = (".md", ".markdown")

    def load(self, path: Path) -> Document:
        text, encoding = decode_text(path.read_bytes())
        if not text.strip():
            raise FileFormatError(f"{path}: the file is empty", "empty")
        sections = markdown_sections(text)
        title = sections[0][1].split(" > ")[0] if sections else path.stem
        return Document(source=str(path), text=text, title=title, sections=sections,
                        meta={"format": "markdown", "encoding": encoding})


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean_pdf_text(text: str) -> str:
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


class PdfLoader:
    """PDF text in reading order with 1-based page numbers (PDFium); the outline (bookmarks) gives sections.

    Pages that draw lines or boxes are also read with pdfplumber: the ruled tables it finds replace their
    flattened text with Markdown tables (rows and cells kept). Pages without a text layer are listed in
    meta["pages_without_text"] (blank pages, which draw nothing, are not); a PDF with no text at all is refused.
    """

    suffixes: tuple[str, ...] = (".pdf",)

    def __init__(self, max_pages: int = 5000, *, tables: bool = True, min_rules_for_tables: int = 3) -> None:
        self.max_pages = max_pages
        self.tables = tables
        self.min_rules_for_tables = min_rules_for_tables

    def _open(self, path: Path):
        import pypdfium2 as pdfium

        try:
            return pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as e:
            if "password" in str(e).lower():
                raise FileFormatError(f"{path}: the PDF is encrypted with a password; remove the password "
                                      "and ingest it again", "encrypted") from e
            raise FileFormatError(f"{path}: not a readable PDF ({e})", "corrupt") from e

    def load(self, path: Path) -> Document:
        pdf = self._open(path)
        try:
            return self._read(path, pdf)
        finally:
            pdf.close()

    def _read(self, path: Path, pdf) -> Document:
        n_pages = len(pdf)
        if n_pages == 0:
            raise FileFormatError(f"{path}: the PDF has no pages", "empty")
        if n_pages > self.max_pages:
            raise FileFormatError(f"{path}: {n_pages} pages is over the limit of {self.max_pages} "
                                  "(CONSULTA_INGEST__MAX_PAGES)", "too_large")
        parts: list[str] = []
        pages: list[tuple[int, int, int]] = []
        empty: list[int] = []
        table_pages: list[int] = []
        plumber = None
        pos = 0
        try:
            for i in range(n_pages):
                page = pdf[i]
                blank = False
                try:
                    t = _clean_pdf_text(page.get_textpage().get_text_range())
                    if not t:  # a page that draws nothing at all is blank, not a scan without text
                        import pypdfium2.raw as pdfium_c

                        blank = pdfium_c.FPDFPage_CountObjects(page.raw) == 0
                    if t and self.tables and self._draws_lines(page):
                        if plumber is None:
                            import pdfplumber

                            plumber = pdfplumber.open(str(path))
                        with_tables = _page_with_tables(plumber.pages[i])
                        if with_tables is not None:
                            t = with_tables
                            table_pages.append(i + 1)
                except FileFormatError:
                    raise
                except Exception as e:  # noqa: BLE001 - broken page streams raise many kinds
                    logger.warning("%s: page %d could not be read: %s", path, i + 1, e)
                    t = ""
                finally:
                    page.close()
                if not t and not blank:
                    empty.append(i + 1)
                if parts:
                    parts.append("\n\n")
                    pos += 2
                pages.append((i + 1, pos, pos + len(t)))
                parts.append(t)
                pos += len(t)
        finally:
            if plumber is not None:
                plumber.close()
        text = "".join(parts)
        if not text.strip():
            raise FileFormatError(f"{path}: no page has a text layer (a scanned PDF?); run OCR on it first",
                                  "no_text")
        try:
            title = (pdf.get_metadata_dict().get("Title") or "").strip()
        except Exception:  # noqa: BLE001
            title = ""
        doc = Document(source=str(path), text=text, title=title or path.stem, pages=pages,
                       meta={"format": "pdf", "doc_pages": n_pages, "pages_without_text": empty,
                             "table_pages": table_pages})
        doc.sections = self._outline_sections(pdf, doc)
        if empty:
            logger.warning("%s: %d of %d pages have no text layer: %s", path, len(empty), n_pages, empty[:20])
        return doc

    def _draws_lines(self, page) -> bool:
        """Whether a page draws at least a few horizontal and vertical rules: only then can it hold a ruled table.

        A cheap look at PDFium's path objects, so that pdfplumber (about 0.3 s a page) reads only those pages.
        """
        import ctypes

        import pypdfium2.raw as pdfium_c

        raw = page.raw
        left, bottom, right, top = (ctypes.c_float() for _ in range(4))
        horizontal = vertical = 0
        for j in range(pdfium_c.FPDFPage_CountObjects(raw)):
            obj = pdfium_c.FPDFPage_GetObject(raw, j)
            if pdfium_c.FPDFPageObj_GetType(obj) != pdfium_c.FPDF_PAGEOBJ_PATH:
                continue
            if not pdfium_c.FPDFPageObj_GetBounds(obj, left, bottom, right, top):
                continue
            width, height = right.value - left.value, top.value - bottom.value
            if width < 3 < 8 < height:
                vertical += 1
            elif height < 3 < 8 < width:
                horizontal += 1
            if vertical >= self.min_rules_for_tables and horizontal >= self.min_rules_for_tables:
                return True
        return False

    @staticmethod
    def _outline_sections(pdf, doc: Document) -> list[tuple[int, str]]:
        """(offset, "Chapter > Section") for each bookmark; the offset is where its title appears on its page."""
        out: list[tuple[int, int, str]] = []
        stack: list[str] = []
        page_span = {p: (s, e) for p, s, e in doc.pages}
        try:
            for n, mark in enumerate(pdf.get_toc(max_depth=8)):
                dest = mark.get_dest()
                index = dest.get_index() if dest is not None else None
                title = " ".join((mark.get_title() or "").split())
                if index is None or not title:
                    continue
                del stack[mark.level:]
                stack.append(title)
                start, end = page_span.get(index + 1, (0, 0))
                found = _find_heading(doc.text, title, start, end)
                out.append((found if found >= 0 else start, n, " > ".join(stack)))
        except Exception:  # noqa: BLE001 - broken outlines are common; sections are optional
            return []
        return [(offset, path) for offset, _n, path in sorted(out)]


def _find_heading(text: str, title: str, start: int, end: int) -> int:
    """Offset of a bookmark's title on its page (whitespace-insensitive, ignoring a trailing full stop)."""
    words = title.rstrip(".").split()
    if not words:
        return -1
    pattern = r"\s+".join(re.escape(w) for w in words)
    m = re.search(pattern, text[start:end], re.IGNORECASE)
    return start + m.start() if m else -1


def _split_stacked_rows(rows: list[list[str]]) -> list[list[str]]:
    """Split a row whose cells all hold the same number (> 1) of lines into that many rows.

    Tables ruled every few rows (the FBI's NICS report draws a line every five states) come out of
    pdfplumber as one row holding five lines per cell.
    """
    out: list[list[str]] = []
    for row in rows:
        lines = [c.split("\n") for c in row]
        counts = {len(x) for x, c in zip(lines, row, strict=True) if c}
        if len(counts) == 1 and (n := counts.pop()) > 1:
            out.extend([x[i] if len(x) == n else "" for x in lines] for i in range(n))
        else:
            out.append(row)
    return out


def _page_with_tables(page) -> str | None:
    """The page's text with each ruled table as a Markdown table in its place; None when it has none."""
    tables = [t for t in page.find_tables() if len(t.rows) >= 2]
    if not tables:
        return None
    tables.sort(key=lambda t: t.bbox[1])
    blocks: list[str] = []
    top = 0.0
    width, height = page.width, page.height

    def text_in(x0: float, y0: float, x1: float, y1: float) -> str:
        y0, y1 = max(0.0, y0), min(height, y1)
        if y1 - y0 < 1:
            return ""
        return page.crop((0, y0, width, y1), strict=False).extract_text() or ""

    for t in tables:
        x0, t_top, x1, t_bottom = t.bbox
        if t_top < top:  # overlaps the previous table: keep the first
            continue
        blocks.append(text_in(0, top, width, t_top))
        rows = _split_stacked_rows([[(c or "").strip() for c in row] for row in t.extract()])
        filled = [sum(bool(c) for c in row) for row in rows]
        if any(len(c) > 400 for row in rows for c in row) or sum(f >= 2 for f in filled) < len(rows) / 2:
            return None  # rules around the header only: the body came out as one column of run-on text
        blocks.append(markdown_table(rows))
        beside = page.crop((0, t_top, width, t_bottom), strict=False).outside_bbox(t.bbox, strict=False)
        blocks.append(beside.extract_text() or "")
        top = t_bottom
    blocks.append(text_in(0, top, width, height))
    return _clean_pdf_text("\n\n".join(b.strip() for b in blocks if b.strip()))


def default_loaders(max_pages: int = 5000, *, pdf_tables: bool = True) -> dict[str, Loader]:
    loaders: list[Loader] = [PdfLoader(max_pages, tables=pdf_tables), MarkdownLoader(), TextLoader(), DocxLoader(),
                             HtmlLoader()]
    return {suffix: loader for loader in loaders for suffix in loader.suffixes}
