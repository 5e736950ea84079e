"""PDF tables kept as tables, checked against the cells pdfplumber's own test suite expects; pages without text.

The expected values come from jsvine/pdfplumber tests/test_ca_warn_report.py (first rows of the California
WARN report) and tests/test_nics_report.py (each NICS column sums to twice its total row).
"""

from __future__ import annotations

import re

import pytest

from ingest.loaders import PdfLoader, TextLoader
from tests.conftest import SHARED_DATA

PLUMBER = SHARED_DATA / "pdf" / "pdfplumber"
needs_data = pytest.mark.skipif(not PLUMBER.is_dir(), reason="../shared/data/pdf/pdfplumber is not beside this "
                                "checkout (public test PDFs, never copied into the repo)")


def markdown_rows(text: str) -> list[list[str]]:
    """Cells of every Markdown table row in a text (separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not re.fullmatch(r"\|(---\|)+", line):
            rows.append([c.strip() for c in line.strip()[1:-1].split("|")])
    return rows


@needs_data
def test_warn_report_rows_and_cells_match_pdfplumbers_expected_values():
    doc = PdfLoader().load(PLUMBER / "WARN-Report-for-7-1-2015-to-03-25-2016.pdf")
    page1 = doc.text[doc.pages[0][1]:doc.pages[0][2]]
    rows = markdown_rows(page1)

    def without_spaces(row):  # pdfplumber's test does the same: the PDF spaces the dates' characters
        return [c.replace(" ", "") for c in row[:3]] + row[3:]

    assert without_spaces(rows[0]) == ["NoticeDate", "Effective", "Received", "Company", "City", "No. Of",
                                       "Layoff/Closure"]
    assert without_spaces(rows[1]) == ["06/22/2015", "03/25/2016", "07/01/2015", "Maxim Integrated Product",
                                       "San Jose", "150", "Closure Permanent"]
    assert doc.meta["table_pages"] == list(range(1, 17)), "the table runs over all 16 pages"


@needs_data
def test_nics_table_columns_sum_to_twice_their_totals_as_pdfplumber_checks():
    doc = PdfLoader().load(PLUMBER / "nics-background-checks-2015-11.pdf")
    rows = markdown_rows(doc.text)
    states = [r for r in rows if len(r) == 25 and re.fullmatch(r"[\d,]+", r[1]) and r[0]]
    assert states[0][0] == "Alabama" and states[0][1:3] == ["18,870", "23,022"]
    assert len(states) == 56  # 55 states and territories, then the totals row
    totals = states[-1]

    def value(cell: str) -> int:
        return int(cell.replace(",", "")) if cell else 0

    for col in range(1, 25):
        assert sum(value(r[col]) for r in states) == 2 * value(totals[col]), f"column {col}"
    assert "November - 2015" in doc.text


@needs_data
def test_pages_without_tables_are_read_as_plain_text():
    doc = PdfLoader().load(PLUMBER / "scotus-transcript-p1.pdf")
    assert doc.meta["table_pages"] == [] and "|---|" not in doc.text and len(doc.text) > 500


def test_a_page_without_text_layer_is_listed_not_silently_empty(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 8, "Page one has text about the archive's opening hours.")
    pdf.add_page()
    pdf.rect(10, 10, 80, 120, style="F")  # a scanned image would look like this: ink, no text
    pdf.add_page()
    pdf.multi_cell(0, 8, "Page three has text again.")
    pdf.output(str(tmp_path / "mixed.pdf"))
    doc = PdfLoader().load(tmp_path / "mixed.pdf")
    assert doc.meta["pages_without_text"] == [2]
    assert [p for p, s, e in doc.pages if e > s] == [1, 3]


@pytest.mark.parametrize("text, encoding", [
    ("Memòria anual: l'atenció al públic és de dilluns a divendres, de 9 a 14 hores, però els dijous "
     "també a la tarda. Informació pràctica per a la ciutadania i per als treballadors.", "cp1252"),
    ("Información práctica: el horario de atención es de lunes a viernes, de 9 a 14 horas; también los "
     "jueves por la tarde. Año tras año, señoras y señores, la oficina atiende sin cita previa.", "latin-1"),
    ("Staff handbook — “quoted” text in UTF-16 with a byte order mark, as Windows Notepad saves it.", "utf-16"),
])
def test_text_file_encoding_is_detected(tmp_path, text, encoding):
    p = tmp_path / "notes.txt"
    p.write_bytes(text.encode(encoding))
    doc = TextLoader().load(p)
    assert doc.text == text
