"""The ingestion pipeline end to end on a real index: metadata, sync by content hash, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.chunker import RecursiveChunker
from ingest.document import context_line
from ingest.errors import InputPathError
from ingest.loaders import default_loaders
from ingest.pipeline import IngestPipeline
from retrieval.errors import EmbedderMismatchError
from retrieval.language import detect_language
from retrieval.retriever import Retriever
from retrieval.store import ENGLISH_FIELD, FaissStore
from tests.conftest import HANDBOOK_PAGES, make_pdf


@pytest.fixture
def pipeline(tmp_path, embedder):
    return IngestPipeline(default_loaders(), RecursiveChunker(300, 50), embedder, FaissStore(tmp_path / "index"))


def test_chunks_carry_page_section_collection_and_offsets(tmp_path, pipeline):
    docs = tmp_path / "docs"
    docs.mkdir()
    make_pdf(docs / "handbook.pdf", HANDBOOK_PAGES)
    (docs / "leave.md").write_text("# Leave\n\n## Annual\n\nStaff get 25 days of paid leave per year.\n")
    report = pipeline.ingest([docs], "hr")
    assert [f.status for f in report.files] == ["ingested", "ingested"]
    store = FaissStore(tmp_path / "index").load()
    by_text = {c.text: c for c in store.chunks()}
    expenses = next(c for t, c in by_text.items() if "reimbursed" in t)
    assert expenses.page == 2 and expenses.collection == "hr" and expenses.meta["language"] == "en"
    leave = next(c for t, c in by_text.items() if "25 days" in t)
    assert leave.page is None and leave.section.startswith("Leave")
    assert all(c.meta["content_hash"] and c.meta["ingested_at"] for c in store.chunks())


def test_offsets_point_into_the_document_text(tmp_path, pipeline):
    p = tmp_path / "long.md"
    text = "# Long\n\n" + "\n\n".join(f"Paragraph {i} says the code is {i * 7}." for i in range(60))
    p.write_text(text)
    pipeline.ingest([p], "c")
    chunks = FaissStore(tmp_path / "index").load().chunks()
    assert len(chunks) > 3
    assert all(text[c.start:c.end] == c.text for c in chunks)


def test_reingest_skips_unchanged_and_replaces_changed(tmp_path, pipeline):
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    a.write_text("# A\n\nThe parking lot closes at 22:00.")
    b.write_text("# B\n\nThe canteen serves lunch from 12:30.")
    pipeline.ingest([a, b], "c")
    b.write_text("# B\n\nThe canteen serves lunch from 13:00 to 15:00.")
    report = pipeline.ingest([a, b], "c")
    assert {f.source.split("/")[-1]: f.status for f in report.files} == {"a.md": "unchanged", "b.md": "ingested"}
    texts = [c.text for c in FaissStore(tmp_path / "index").load().chunks()]
    assert any("13:00" in t for t in texts) and not any("12:30" in t for t in texts)
    assert len(texts) == 2


def test_bad_files_are_reported_and_the_rest_ingested(tmp_path, pipeline):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "good.md").write_text("# Good\n\nVisitors sign in at the front desk.")
    (d / "broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    (d / "empty.txt").write_bytes(b"")
    report = pipeline.ingest([d], "c")
    status = {f.source.split("/")[-1]: (f.status, f.error) for f in report.files}
    assert status["good.md"][0] == "ingested"
    assert status["broken.pdf"][0] == "failed" and "broken.pdf" in status["broken.pdf"][1]
    assert status["empty.txt"][0] == "failed" and "empty" in status["empty.txt"][1]
    assert len(FaissStore(tmp_path / "index").load()) == 1


def test_the_progress_bar_shows_pages_and_chunks_per_second(tmp_path, pipeline):
    """`consulta ingest` shows pages/s and chunks/s: from each file's result as it finishes, chunks as embedded."""
    from app.cli.commands import IngestRates

    d = tmp_path / "docs"
    d.mkdir()
    make_pdf(d / "handbook.pdf", HANDBOOK_PAGES)
    (d / "broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    now = [0.0]
    rates = IngestRates(clock=lambda: now[0])
    finished = []

    def on_file(result):
        finished.append(result)
        rates.file_done(result)

    report = pipeline.ingest([d], "c", file_progress=lambda name, done, total: rates.embedding(done),
                             on_file=on_file)
    # each file once, in the order parsing finished (workers: not always the order given)
    assert sorted((f.source, f.status) for f in finished) == sorted((f.source, f.status) for f in report.files)
    handbook = next(f for f in report.files if f.status == "ingested")
    assert handbook.pages == len(HANDBOOK_PAGES) and handbook.chunks > 0
    now[0] = 2.0
    assert str(rates) == f"{len(HANDBOOK_PAGES) / 2:.2f} pages/s, {handbook.chunks / 2:.1f} chunks/s"
    assert str(IngestRates()) == "", "nothing is shown before the first chunk"
    first = IngestRates(clock=lambda: now[0])
    first.embedding(3)
    now[0] = 4.0
    assert str(first) == "1.5 chunks/s", "no 0.00 pages/s while the first file is still being embedded"


def test_missing_path_is_a_clear_error(tmp_path, pipeline):
    with pytest.raises(InputPathError, match="nope.pdf: no such file"):
        pipeline.ingest([tmp_path / "nope.pdf"], "c")


def test_remove_document(tmp_path, pipeline):
    a = tmp_path / "a.md"
    a.write_text("# A\n\nThe badge office is on floor 2.")
    pipeline.ingest([a], "c")
    assert pipeline.remove([str(a)]) == 1
    assert len(FaissStore(tmp_path / "index").load()) == 0


def test_index_refuses_vectors_from_another_embedder(tmp_path, pipeline):
    a = tmp_path / "a.md"
    a.write_text("# A\n\nThe badge office is on floor 2.")
    pipeline.ingest([a], "c")

    class OtherEmbedder:
        model_id = "other-model"
        dim = pipeline.embedder.dim

        def warm_up(self):
            pass

        def embed_documents(self, texts):
            return pipeline.embedder.embed_documents(texts)

    other = IngestPipeline(default_loaders(), RecursiveChunker(300, 50), OtherEmbedder(), pipeline.store)
    b = tmp_path / "b.md"
    b.write_text("# B\n\nLunch is at noon.")
    with pytest.raises(EmbedderMismatchError, match="consulta reindex"):
        other.ingest([b], "c")
    assert len(FaissStore(tmp_path / "index").load()) == 1


def test_word_and_html_chunks_carry_sections_and_table_cells(tmp_path, pipeline):
    from tests.ingest.test_office import HTML, make_docx

    d = tmp_path / "office"
    d.mkdir()
    make_docx(d / "leave.docx")
    (d / "guia.html").write_text(HTML, encoding="utf-8")
    (d / "broken.docx").write_bytes(b"not really a word file")
    report = pipeline.ingest([d], "hr")
    status = {f.source.split("/")[-1]: (f.status, f.error) for f in report.files}
    assert status["leave.docx"][0] == status["guia.html"][0] == "ingested"
    assert status["broken.docx"][0] == "failed" and "broken.docx" in status["broken.docx"][1]
    assert report.failed == [f for f in report.files if f.source.endswith("broken.docx")]
    chunks = FaissStore(tmp_path / "index").load().chunks()
    table = next(c for c in chunks if "| A1 | 27 |" in c.text)
    assert table.source.endswith("leave.docx") and table.page is None and table.meta["format"] == "docx"
    assert table.section == "Leave policy > Annual leave > Carry over" and "| Grade | Days |" in table.text
    summer = next(c for c in chunks if "juliol" in c.text)
    assert summer.section.startswith("Guia") and summer.meta["title"] == "Guia del personal"
    assert any("| Dissabte | tancat |" in c.text for c in chunks)
    assert not any("do-not-index" in c.text for c in chunks)


def test_prune_removes_only_files_gone_from_the_given_folders(tmp_path, pipeline):
    docs, elsewhere = tmp_path / "docs", tmp_path / "elsewhere"
    docs.mkdir()
    elsewhere.mkdir()
    for name, text in [("a.md", "The parking lot closes at 22:00."), ("b.md", "Lunch is served from 12:30."),
                       ("c.txt", "The badge office is on floor 2.")]:
        (docs / name).write_text(text)
    (elsewhere / "d.md").write_text("The library opens at 9:00.")
    pipeline.ingest([docs, elsewhere], "hr")
    pipeline.ingest([docs], "other")
    (docs / "b.md").unlink()
    (elsewhere / "d.md").unlink()  # gone too, but not under the folder being synced

    report = pipeline.ingest([docs], "hr", prune=True)
    assert report.removed == [str((docs / "b.md").resolve())]
    assert report.to_dict()["removed"] == report.removed
    left = {(d["collection"], Path(d["source"]).name) for d in FaissStore(tmp_path / "index").load().documents()}
    assert left == {("hr", "a.md"), ("hr", "c.txt"), ("hr", "d.md"),
                    ("other", "a.md"), ("other", "b.md"), ("other", "c.txt")}
    assert pipeline.ingest([docs], "hr").removed == []  # without prune nothing is removed


def test_every_chunk_carries_what_a_citation_needs(tmp_path, pipeline):
    docs = tmp_path / "docs"
    docs.mkdir()
    make_pdf(docs / "handbook.pdf", HANDBOOK_PAGES)
    pipeline.ingest([docs], "hr")
    chunks = FaissStore(tmp_path / "index").load().chunks()
    assert chunks
    for c in chunks:
        m = c.meta
        assert m["source"] == str((docs / "handbook.pdf").resolve()) and m["title"] == "Staff handbook"
        assert m["page"] in (1, 2) and "page_end" in m and m["collection"] == "hr" and m["language"] == "en"
        assert m["modified_at"].startswith("20") and m["ingested_at"].startswith("20")
        assert len(m["content_hash"]) == 64 and m["chunker"] == "recursive:300:50" and m["format"] == "pdf"
        assert 0 <= c.start < c.end and "section" in m


def test_english_chunks_get_the_english_models_vectors_and_an_older_index_is_filled_in(tmp_path, embedder):
    """An index made without the English ranking gets it at the next ingest, without embedding anything else again."""
    from retrieval.embedder import SentenceTransformerEmbedder

    english = SentenceTransformerEmbedder()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text("# Leave\n\nStaff get 25 days of paid leave per year, booked in the HR portal.\n")
    (docs / "vacaciones.md").write_text("# Vacaciones\n\nLos trabajadores disfrutan de veintitrés días de "
                                        "vacaciones pagadas al año, que se piden en el portal de personal.\n")
    plain = IngestPipeline(default_loaders(), RecursiveChunker(300, 50), embedder, FaissStore(tmp_path / "index"))
    plain.ingest([docs], "hr")
    assert not FaissStore(tmp_path / "index").load().has_field(ENGLISH_FIELD, english.model_id)

    (docs / "parking.md").write_text("# Parking\n\nThe car park closes at ten in the evening.\n")
    with_english = IngestPipeline(default_loaders(), RecursiveChunker(300, 50), embedder,
                                  FaissStore(tmp_path / "index"), english_embedder=english)
    seen = []
    report = with_english.ingest([docs], "hr", file_progress=lambda name, done, total: seen.append((name, done, total)))
    assert ("English vectors (once)", 1, 1) in seen, "the one-time fill of the older index is reported"
    assert {f.source.split("/")[-1]: f.status for f in report.files} == {
        "leave.md": "unchanged", "parking.md": "ingested", "vacaciones.md": "unchanged"}
    store = FaissStore(tmp_path / "index").load()
    assert store.has_field(ENGLISH_FIELD, english.model_id)
    assert [h.chunk.meta["source"].split("/")[-1] for h in
            store.search(english.embed_query("How many days of holiday do I get?"), 5, field=ENGLISH_FIELD)] \
        == ["leave.md", "parking.md"], "both English documents, best first; the Spanish one has no English vector"


def test_a_passage_is_found_by_the_document_and_section_it_sits_in(tmp_path, embedder):
    """Two policies word their rule alike and neither passage names its policy: only the file and its headings
    do. Indexed with its context line, each passage is found first by a question naming its document or
    section, in dense and BM25 search alike, while hits and citations still show the passage alone."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "Remote_work_policy.txt").write_text("Requests must be approved in writing by office 12.\n")
    (docs / "expense_claims.txt").write_text("Requests must be approved in writing by office 47.\n")
    (docs / "handbook.md").write_text("# Staff handbook\n\n## Parking\n\n### How to apply\n\nAsk at desk 3 for a card."
                                      "\n\n## Library\n\n### How to apply\n\nAsk at desk 5 for a card.\n")
    pipeline = IngestPipeline(default_loaders(), RecursiveChunker(300, 0), embedder, FaissStore(tmp_path / "index"))
    pipeline.ingest([docs], "c")
    store = FaissStore(tmp_path / "index").load()
    by_text = {c.text.strip(): c for c in store.chunks()}
    remote = by_text["Requests must be approved in writing by office 12."]
    assert remote.meta["context"] == "Remote work policy"
    assert remote.index_text == "Remote work policy\n" + remote.text
    library = by_text["### How to apply\n\nAsk at desk 5 for a card."]
    assert library.meta["context"] == "handbook · Staff handbook > Library > How to apply"
    for mode in ("dense", "bm25", "hybrid"):
        search = Retriever(embedder, store, mode=mode, detect_language=detect_language).retrieve
        assert search("Who approves requests under the remote work policy?", 2)[0].chunk.text.strip().endswith(
            "office 12."), mode
        assert search("Who approves expense claims?", 2)[0].chunk.text.strip().endswith("office 47."), mode
        assert search("How do I apply for a library card?", 2)[0].chunk.id == library.id, mode
        parking = search("How do I apply for a parking card?", 2)[0].chunk
        assert parking.text.strip().endswith("desk 3 for a card."), mode


def test_an_index_made_without_the_context_line_is_told_so_and_reindexing_adds_it(tmp_path, embedder):
    """Files indexed before the context line keep their chunks until they change; each ingest counts them, and
    a rebuild from the sources (what `consulta reindex` does) gives every chunk its line."""
    (tmp_path / "old.txt").write_text("The gate code is 4821.\n")
    (tmp_path / "new.txt").write_text("The alarm code is 9930.\n")

    def pipeline(header: bool) -> IngestPipeline:
        return IngestPipeline(default_loaders(), RecursiveChunker(300, 0), embedder, FaissStore(tmp_path / "index"),
                              context_header=header)

    assert pipeline(False).ingest([tmp_path / "old.txt"], "c").without_context == 0
    report = pipeline(True).ingest([tmp_path / "old.txt", tmp_path / "new.txt"], "c")
    assert report.without_context == 1 and report.to_dict()["without_context"] == 1
    contexts = {c.text.strip(): c.meta.get("context") for c in FaissStore(tmp_path / "index").load().chunks()}
    assert contexts == {"The gate code is 4821.": None, "The alarm code is 9930.": "new"}
    rebuilt = pipeline(True).ingest_groups({"c": [tmp_path / "old.txt", tmp_path / "new.txt"]}, replace=True)
    assert rebuilt[0].without_context == 0
    assert {c.meta.get("context") for c in FaissStore(tmp_path / "index").load().chunks()} == {"old", "new"}


def test_placeholder_titles_give_way_to_the_file_name(tmp_path, pipeline):
    """A PDF whose metadata title is a filing number or a word processor's label is cited by its file name or
    the label's own words, not by the placeholder."""
    make_pdf(tmp_path / "AMAZON_2019_10K.pdf", ["Net sales increased 20% to $280.5 billion."],
             title="0001018724-20-000004")
    make_pdf(tmp_path / "agenda.pdf", ["The board meets on Tuesday."], title="Microsoft Word - BOARD AGENDA.doc")
    pipeline.ingest([tmp_path / "AMAZON_2019_10K.pdf", tmp_path / "agenda.pdf"], "c")
    titles = {Path(c.source).name: c.meta["title"] for c in FaissStore(tmp_path / "index").load().chunks()}
    assert titles == {"AMAZON_2019_10K.pdf": "AMAZON_2019_10K", "agenda.pdf": "BOARD AGENDA"}


def test_the_context_line_skips_placeholder_titles():
    """Authoring tools' and filing systems' titles say nothing about the document; the file name does."""
    assert context_line("/f/3M_2018_10K.pdf", "10-K - 02/07/2019 - 3M Company", None) == \
        "3M 2018 10K · 10-K - 02/07/2019 - 3M Company"
    assert context_line("/f/AMAZON_2019_10K.pdf", "0001018724-20-000004", None) == "AMAZON 2019 10K"
    assert context_line("/f/agenda.pdf", "Microsoft Word - SPECIAL BOARD AGENDA 040616.doc", None) == \
        "agenda · SPECIAL BOARD AGENDA 040616"
    assert context_line("/f/leave.md", "Leave", "Leave > Annual") == "leave · Leave > Annual"
    assert context_line("/f/partners.pdf", "Art", None) == "partners · Art"
    assert context_line("/f/0001018724-20-000004.pdf", "Annual report", None) == "Annual report"
    assert context_line("/f/12345.txt", None, None) == ""
    assert len(context_line("/f/x.pdf", None, "Part > " * 100)) <= 240
