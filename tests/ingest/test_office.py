"""Word and HTML loaders keep the heading hierarchy as section paths and tables as Markdown tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.errors import FileFormatError
from ingest.office import DocxLoader, HtmlLoader

FILLER = ("Requests go through the staff portal at least two weeks ahead, and the manager answers within "
          "five working days; a request without an answer after that time counts as approved by default.")


def make_docx(path: Path) -> Path:
    """A leave policy with a title, nested headings and a table, written with python-docx."""
    import docx

    d = docx.Document()
    d.add_heading("Leave policy", 0)
    d.add_heading("Annual leave", 1)
    d.add_paragraph("Staff get 25 days of paid leave per year. " + FILLER)
    d.add_heading("Carry over", 2)
    d.add_paragraph("Up to 5 unused days move to the next year. " + FILLER)
    table = d.add_table(rows=3, cols=2)
    for r, (grade, days) in enumerate([("Grade", "Days"), ("A1", "27"), ("B2", "30")]):
        table.cell(r, 0).text, table.cell(r, 1).text = grade, days
    d.add_heading("Sick leave", 1)
    d.add_paragraph("Report sickness to your manager before 10:00.")
    d.save(str(path))
    return path


HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Guia del personal</title>
<style>body { color: red }</style></head><body>
<nav><a href="/">Inici</a> | <a href="/contacte">Contacte</a></nav>
<h1>Guia</h1><p>Benvinguda a l'<b>oficina</b>.</p>
<script>var trackingSecret = "do-not-index";</script>
<h2>Horaris</h2><p>Obrim de 8 a 18.</p>
<h3>Estiu</h3><p>Al juliol tanquem a les 15.</p>
<table><tr><th>Dia</th><th>Obertura</th></tr><tr><td>Dilluns</td><td>8:00</td></tr>
<tr><td>Dissabte</td><td>tancat</td></tr></table>
<h2>Despeses</h2><p>Els tiquets es pugen al portal.</p>
</body></html>"""


def test_docx_headings_give_section_paths_and_tables_stay_tables(tmp_path):
    doc = DocxLoader().load(make_docx(tmp_path / "leave.docx"))
    assert doc.title == "Leave policy" and doc.pages == [] and doc.page_at(0) is None
    assert doc.section_at(doc.text.index("25 days")) == "Leave policy > Annual leave"
    assert doc.section_at(doc.text.index("Up to 5")) == "Leave policy > Annual leave > Carry over"
    assert doc.section_at(doc.text.index("before 10:00")) == "Leave policy > Sick leave"
    assert "| Grade | Days |\n|---|---|\n| A1 | 27 |\n| B2 | 30 |" in doc.text
    assert doc.section_at(doc.text.index("| A1 |")) == "Leave policy > Annual leave > Carry over"


def test_html_reading_order_sections_table_and_no_script(tmp_path):
    p = tmp_path / "guia.html"
    p.write_text(HTML, encoding="utf-8")
    doc = HtmlLoader().load(p)
    assert doc.title == "Guia del personal"
    assert "do-not-index" not in doc.text and "color: red" not in doc.text and "Contacte" not in doc.text
    assert "Benvinguda a l'oficina." in doc.text
    assert doc.text.index("Obrim") < doc.text.index("juliol") < doc.text.index("Dilluns") < doc.text.index("portal")
    assert doc.section_at(doc.text.index("juliol")) == "Guia > Horaris > Estiu"
    assert doc.section_at(doc.text.index("portal")) == "Guia > Despeses"
    assert "| Dia | Obertura |\n|---|---|\n| Dilluns | 8:00 |\n| Dissabte | tancat |" in doc.text


def test_html_in_a_legacy_encoding_is_decoded(tmp_path):
    p = tmp_path / "avis.htm"
    p.write_bytes("<html><body><h1>Avís</h1><p>L'atenció al públic és de dilluns a divendres, de 9 a 14 hores."
                  "</p></body></html>".encode("cp1252"))
    doc = HtmlLoader().load(p)
    assert "atenció al públic" in doc.text and doc.title == "Avís"


@pytest.mark.parametrize("content", [b"this is plain text pretending", b"PK\x03\x04 truncated zip"])
def test_corrupt_docx_names_the_file(tmp_path, content):
    p = tmp_path / "broken.docx"
    p.write_bytes(content)
    with pytest.raises(FileFormatError, match="broken.docx: not a readable Word"):
        DocxLoader().load(p)
