"""Bad files through the real `consulta ingest`: one clear line each, the rest still ingested, a failing exit code."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_pdf, run_cli


def write_bad_files(d):
    from fpdf import FPDF
    from pypdf import PdfReader, PdfWriter

    d.mkdir()
    (d / "good.md").write_text("# Visitors\n\nVisitors sign in at the front desk and wear a badge.")
    (d / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> truncated here")
    src = make_pdf(d.parent / "plain.pdf", ["Salaries of the board, strictly confidential."])
    w = PdfWriter()
    for page in PdfReader(str(src)).pages:
        w.add_page(page)
    w.encrypt("hunter2")
    with open(d / "locked.pdf", "wb") as f:
        w.write(f)
    (d / "empty.txt").write_bytes(b"")
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 80, 120, style="F")
    pdf.output(str(d / "scan.pdf"))
    (d / "huge.txt").write_text("Minutes of the meeting. " * 3000)  # 72 KB, over the 0.05 MB limit below
    (d / "minutes.pdf").write_text("These are plain text minutes that someone saved with a .pdf name.")
    (d / "letter.docx").write_bytes(src.read_bytes())  # a PDF named .docx


EXPECTED = {  # file -> (reason code, words of the message)
    "corrupt.pdf": ("corrupt", "not a readable PDF"),
    "locked.pdf": ("encrypted", "password"),
    "empty.txt": ("empty", "empty"),
    "scan.pdf": ("no_text", "no page has a text layer"),
    "huge.txt": ("too_large", "over the limit"),
    "minutes.pdf": ("misnamed", "named .pdf but the content is text"),
    "letter.docx": ("misnamed", "named .docx but the content is a PDF"),
}


@pytest.fixture(scope="module")
def bad_run(base_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    write_bad_files(root / "docs")
    env = {**base_env, "CONSULTA_DATA_DIR": str(root / "data"), "CONSULTA_INGEST__MAX_FILE_MB": "0.05"}
    text = run_cli(["ingest", str(root / "docs")], env)
    as_json = run_cli(["ingest", str(root / "docs"), "--json"], env)
    return text, as_json


def test_each_bad_file_gets_one_line_naming_it_and_the_reason(bad_run):
    r, _ = bad_run
    assert r.returncode == 1, "the exit code says some files failed"
    failed = [line for line in r.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == len(EXPECTED), r.stderr
    for name, (_reason, words) in EXPECTED.items():
        line = next((x for x in failed if f"/{name}:" in x), None)
        assert line is not None and words in line, (name, r.stderr)
    assert "1 ingested" in r.stderr and "Traceback" not in r.stderr


def test_json_summary_gives_each_files_status_and_reason(bad_run):
    _, r = bad_run
    assert r.returncode == 1
    out = json.loads(r.stdout)
    by_name = {f["source"].rsplit("/", 1)[-1]: f for f in out["files"]}
    assert by_name["good.md"]["status"] == "unchanged"  # ingested by the first run, kept by this one
    for name, (reason, words) in EXPECTED.items():
        assert by_name[name]["status"] == "failed" and by_name[name]["reason"] == reason, by_name[name]
        assert words in by_name[name]["error"] and name in by_name[name]["error"]
    assert out["failed"] == len(EXPECTED) and out["total_chunks"] == 1


def test_a_file_that_needs_too_much_memory_or_time_fails_alone(base_env, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.md").write_text("# Note\n\nThe archive opens at nine.")
    (docs / "dump.txt").write_bytes(b"word " * (30 * 1024 * 1024))  # 150 MB of text: more than 256 MB to decode
    env = {**base_env, "CONSULTA_DATA_DIR": str(tmp_path / "data"), "CONSULTA_INGEST__PARSE_MEMORY_MB": "256"}
    r = run_cli(["ingest", str(docs), "--json"], env)
    (docs / "dump.txt").unlink()
    assert r.returncode == 1, r.stderr
    by_name = {f["source"].rsplit("/", 1)[-1]: f for f in json.loads(r.stdout)["files"]}
    assert by_name["note.md"]["status"] == "ingested"
    assert by_name["dump.txt"]["reason"] in ("out_of_memory", "crashed"), by_name["dump.txt"]
    assert "PARSE_MEMORY_MB" in by_name["dump.txt"]["error"]

    make_pdf(docs / "handbook.pdf", ["Chapter 1. The office opens at 8:00."])
    env["CONSULTA_INGEST__PARSE_TIMEOUT_S"] = "0.01"  # no parser answers this fast: every file overruns
    r = run_cli(["ingest", str(docs / "handbook.pdf"), "--json"], env)
    assert r.returncode == 1, r.stderr
    (result,) = json.loads(r.stdout)["files"]
    assert result["reason"] == "timeout" and "PARSE_TIMEOUT_S" in result["error"]
