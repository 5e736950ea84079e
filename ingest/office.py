"""Loaders for structured formats without pages: Word (.docx) and HTML.

Both build the document text block by block, so headings become section paths ("A > B") the way
markdown_sections does, and tables become Markdown tables inside the text (rows and cells kept).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ingest.document import Document
from ingest.errors import FileFormatError
from ingest.text import decode_text, markdown_table

logger = logging.getLogger(__name__)


class _TextBuilder:
    """Appends blocks separated by blank lines and records where each heading's section starts."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.sections: list[tuple[int, str]] = []
        self._stack: list[tuple[int, str]] = []

    def block(self, text: str) -> None:
        text = text.strip("\n")
        if not text.strip():
            return
        if self.parts:
            self.parts.append("\n\n")
            self.pos += 2
        self.parts.append(text)
        self.pos += len(text)

    def heading(self, level: int, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            return
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        start = self.pos + (2 if self.parts else 0)
        self.sections.append((start, " > ".join(t for _, t in self._stack)))
        self.block(title)

    @property
    def text(self) -> str:
        return "".join(self.parts)


_DOCX_HEADING = re.compile(r"^heading\s+([1-6])$", re.IGNORECASE)


class DocxLoader:
    """Word paragraphs and tables in body order; "Title" and "Heading 1".."Heading 6" give sections."""

    suffixes: tuple[str, ...] = (".docx",)

    def load(self, path: Path) -> Document:
        import docx
        from docx.opc.exceptions import PackageNotFoundError
        from docx.table import Table
        from lxml.etree import LxmlError

        try:
            d = docx.Document(str(path))
            content = list(d.iter_inner_content())
            core_title = (d.core_properties.title or "").strip()
        except (PackageNotFoundError, LxmlError, KeyError, ValueError, OSError) as e:
            raise FileFormatError(f"{path}: not a readable Word (.docx) document ({e})", "corrupt") from e
        b = _TextBuilder()
        first_heading = None
        for item in content:
            if isinstance(item, Table):
                b.block(markdown_table([[cell.text for cell in row.cells] for row in item.rows]))
                continue
            level = self._heading_level(item)
            if level is not None:
                first_heading = first_heading or item.text.strip()
                b.heading(level, item.text)
            else:
                b.block(item.text)
        if not b.text.strip():
            raise FileFormatError(f"{path}: the document has no text", "no_text")
        title = core_title or first_heading or path.stem
        return Document(source=str(path), text=b.text, title=title, sections=b.sections, meta={"format": "docx"})

    @staticmethod
    def _heading_level(paragraph) -> int | None:
        try:
            name = (paragraph.style.name or "") if paragraph.style is not None else ""
        except (KeyError, ValueError):
            return None
        if name.lower() == "title":
            return 0
        m = _DOCX_HEADING.match(name.strip())
        return int(m.group(1)) if m else None


_HTML_DROP = ("script", "style", "nav", "noscript", "template", "svg", "head", "iframe")
_HTML_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_HTML_BLOCKS = {"p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote", "ul", "ol",
                "li", "dl", "dt", "dd", "figure", "figcaption", "form", "fieldset", "address", "hr", "body",
                "details", "summary", "caption"}


class HtmlLoader:
    """HTML text in reading order (BeautifulSoup, stdlib parser); h1..h6 give sections, <title> the title."""

    suffixes: tuple[str, ...] = (".html", ".htm")

    def load(self, path: Path) -> Document:
        from bs4 import BeautifulSoup

        html = decode_text(path.read_bytes())[0]
        try:
            soup = BeautifulSoup(html, "html.parser")
        except Exception as e:  # noqa: BLE001 - the parser is lenient; anything it raises means unreadable
            raise FileFormatError(f"{path}: not a readable HTML document ({e})", "corrupt") from e
        title_tag = soup.find("title")
        title = " ".join(title_tag.get_text().split()) if title_tag else ""
        for tag in soup.find_all(_HTML_DROP):
            tag.decompose()
        walker = _HtmlWalker()
        walker.walk(soup)
        walker.flush()
        b = walker.builder
        if not b.text.strip():
            raise FileFormatError(f"{path}: the page has no text", "no_text")
        if not title:
            title = b.sections[0][1].split(" > ")[0] if b.sections else path.stem
        return Document(source=str(path), text=b.text, title=title, sections=b.sections, meta={"format": "html"})


class _HtmlWalker:
    """Collects inline text into paragraphs, flushing at block boundaries, headings and tables."""

    def __init__(self) -> None:
        self.builder = _TextBuilder()
        self._buf: list[str] = []
        self._prefix = ""

    def flush(self) -> None:
        lines = (" ".join(line.split()) for line in "".join(self._buf).split("\n"))
        text = "\n".join(line for line in lines if line)
        if text:
            self.builder.block(self._prefix + text)
        self._buf = []
        self._prefix = ""

    def walk(self, node) -> None:
        from bs4 import NavigableString, Tag
        from bs4.element import PreformattedString

        for child in node.children:
            if isinstance(child, PreformattedString):  # comments, doctype, CDATA, processing instructions
                continue
            if isinstance(child, NavigableString):
                self._buf.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in _HTML_HEADINGS:
                self.flush()
                self.builder.heading(_HTML_HEADINGS[name], child.get_text(" "))
            elif name == "table":
                self.flush()
                self._table(child)
            elif name == "br":
                self._buf.append("\n")
            elif name == "pre":
                self.flush()
                self.builder.block(child.get_text().strip("\n"))
            elif name in _HTML_BLOCKS:
                self.flush()
                if name == "li":
                    self._prefix = "- "
                self.walk(child)
                self.flush()
            else:
                self.walk(child)

    def _table(self, table) -> None:
        caption = table.find("caption")
        if caption is not None and caption.find_parent("table") is table:
            self.builder.block(" ".join(caption.get_text(" ").split()))
        rows = []
        for tr in table.find_all("tr"):
            if tr.find_parent("table") is not table:
                continue  # a row of a nested table; its text shows in the enclosing cell
            row = []
            for cell in tr.find_all(("td", "th"), recursive=False):
                text = cell.get_text(" ")
                try:
                    span = min(max(int(cell.get("colspan", 1)), 1), 50)
                except ValueError:
                    span = 1
                row.extend([text] * span)
            rows.append(row)
        self.builder.block(markdown_table(rows))
