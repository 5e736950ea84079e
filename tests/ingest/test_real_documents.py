"""Real public documents from ../shared/data: FinanceBench evidence pages, the Spanish and Catalan manuals.

These check what a citation needs (page, section, language) on chunks made by the pipeline's own code
(`IngestPipeline._chunks_for`), without embedding, so they stay cheap.
"""

from __future__ import annotations

import json
import re

import pytest

from ingest.chunker import RecursiveChunker
from ingest.loaders import PdfLoader, default_loaders
from ingest.pipeline import IngestPipeline
from retrieval.store import FaissStore
from tests.conftest import SHARED_DATA

FINANCEBENCH = SHARED_DATA / "pdf" / "financebench-dev"
DEBIAN = SHARED_DATA / "pdf" / "debian-docs"


def chunk_pipeline(tmp_path, embedder) -> IngestPipeline:
    return IngestPipeline(default_loaders(), RecursiveChunker(800, 120), embedder, FaissStore(tmp_path / "index"))


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{3,}|\d[\d,.]*\d|\d", text.lower()))


@pytest.mark.slow
@pytest.mark.skipif(not FINANCEBENCH.is_dir(), reason="../shared/data/pdf/financebench-dev is not beside this "
                    "checkout (public evaluation data, never copied into the repo)")
def test_financebench_evidence_lands_in_a_chunk_of_the_evidence_page(tmp_path, embedder):
    """For every question, the chunk that holds most of the evidence text is on the evidence page.

    The table pass is off here to keep the test under a minute (it only rewrites text within a page).
    """
    questions = [json.loads(line) for line in (FINANCEBENCH / "qa.jsonl").read_text().splitlines() if line.strip()]
    pipeline = chunk_pipeline(tmp_path, embedder)
    loader = PdfLoader(tables=False)
    chunks: dict[str, list] = {}
    wrong = []
    for q in questions:
        for ev in q["evidence"]:
            name = ev["doc_name"]
            if name not in chunks:
                doc = loader.load(FINANCEBENCH / "pdfs" / f"{name}.pdf")
                chunks[name] = pipeline._chunks_for(doc, "fb", "hash", "now")
            evidence = words(ev["evidence_text"])
            best = max(chunks[name], key=lambda c: len(evidence & words(c.text)))
            if best.page != ev["page_num_0based"] + 1:
                wrong.append((q["id"], ev["page_num_0based"] + 1, best.page))
    assert len(questions) == 30 and not wrong, wrong


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="../shared/data/pdf/debian-docs is not beside this checkout")
@pytest.mark.parametrize("name, language, section", [
    ("maint-guide.es.pdf", "es", "Empezando «de la forma correcta». > Dinamismo social en Debian"),
    ("maint-guide.ca.pdf", "ca", "Començant correctament. > Dinamisme social a Debian"),
])
def test_spanish_and_catalan_manuals_get_their_language_and_section_paths(tmp_path, embedder, name, language,
                                                                          section):
    doc = PdfLoader().load(DEBIAN / name)
    chunks = chunk_pipeline(tmp_path, embedder)._chunks_for(doc, "manuals", "hash", "now")
    assert {c.meta["language"] for c in chunks} == {language}
    assert all(c.page is not None and doc.text[c.start:c.end] == c.text for c in chunks)
    sections = [c.section for c in chunks if c.section]
    assert len(sections) > 0.8 * len(chunks), "almost every chunk lies under a bookmark"
    under = [c for c in chunks if c.section == section]
    assert under, sorted(set(sections))[:10]
    heading = section.split(" > ")[-1]
    assert any(heading in c.text for c in under), "the section starts where its heading is printed"
