"""Loaders keep what makes an answer checkable: page numbers, sections, clear errors for bad files."""

from __future__ import annotations

import pytest

from ingest.errors import FileFormatError
from ingest.loaders import MarkdownLoader, PdfLoader, TextLoader, markdown_sections
from tests.conftest import HANDBOOK_PAGES, SHARED_DATA, make_pdf


def test_pdf_pages_map_offsets_to_the_right_page(tmp_path):
    doc = PdfLoader().load(make_pdf(tmp_path / "h.pdf", HANDBOOK_PAGES))
    assert [p[0] for p in doc.pages] == [1, 2]
    assert doc.meta["doc_pages"] == 2
    assert doc.page_at(doc.text.index("reimbursed")) == 2
    assert doc.page_at(doc.text.index("Working hours")) == 1
    assert doc.title == "Staff handbook"


def test_markdown_sections_follow_heading_hierarchy(tmp_path):
    text = "# Policy\nintro\n## Leave\n25 days\n```\n# not a heading\n```\n### Carry over\n5 days\n## Pay\nmonthly\n"
    secs = markdown_sections(text)
    assert [s[1] for s in secs] == ["Policy", "Policy > Leave", "Policy > Leave > Carry over", "Policy > Pay"]
    p = tmp_path / "p.md"
    p.write_text(text)
    doc = MarkdownLoader().load(p)
    assert doc.section_at(text.index("\n5 days") + 1) == "Policy > Leave > Carry over"
    assert doc.section_at(text.index("monthly")) == "Policy > Pay"


def test_text_in_legacy_encoding_is_decoded(tmp_path):
    p = tmp_path / "horari.txt"
    p.write_bytes("L'horari d'atenció és de dilluns a divendres, de 9 a 14 hores. Informació útil.".encode("cp1252"))
    assert "atenció" in TextLoader().load(p).text


@pytest.mark.parametrize("content, reason", [
    (b"%PDF-1.4\n garbage that is not a pdf", "not a readable PDF"),
    (b"this is plain text pretending", "not a readable PDF"),
])
def test_corrupt_pdf_names_the_file_and_reason(tmp_path, content, reason):
    p = tmp_path / "broken.pdf"
    p.write_bytes(content)
    with pytest.raises(FileFormatError) as e:
        PdfLoader().load(p)
    assert "broken.pdf" in str(e.value) and reason in str(e.value)


def test_encrypted_pdf_is_refused_with_a_hint(tmp_path):
    from pypdf import PdfReader, PdfWriter

    src = make_pdf(tmp_path / "plain.pdf", ["secret salaries"])
    w = PdfWriter()
    for page in PdfReader(str(src)).pages:
        w.add_page(page)
    w.encrypt("hunter2")
    with open(tmp_path / "locked.pdf", "wb") as f:
        w.write(f)
    with pytest.raises(FileFormatError, match="locked.pdf.*password"):
        PdfLoader().load(tmp_path / "locked.pdf")


def test_pdf_without_text_layer_is_reported(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)
    pdf.output(str(tmp_path / "scan.pdf"))
    with pytest.raises(FileFormatError, match="scan.pdf.*text layer"):
        PdfLoader().load(tmp_path / "scan.pdf")


@pytest.mark.skipif(not (SHARED_DATA / "pdf/debian-docs").exists(),
                    reason="the public PDFs in ../shared/data are not beside this checkout")
def test_real_catalan_manual_has_pages_and_outline_sections():
    doc = PdfLoader().load(SHARED_DATA / "pdf/debian-docs/maint-guide.ca.pdf")
    assert doc.meta["doc_pages"] == len(doc.pages) > 20
    assert doc.sections, "the manual's bookmarks give section paths"
    mid = len(doc.text) // 2
    assert doc.page_at(mid) is not None and doc.section_at(mid)
