"""The four chunkers on real text with the default embedder (e5): where they cut, what a chunk carries."""

from __future__ import annotations

import pytest

from ingest.chunker import (
    DoublePassChunker,
    RecursiveChunker,
    SemanticChunker,
    SentenceWindowChunker,
    build_chunker,
    sentence_spans,
)
from ingest.document import Document
from ingest.errors import IndexSettingsMismatchError
from ingest.loaders import default_loaders
from ingest.pipeline import IngestPipeline
from retrieval.store import FaissStore

TOPICS = (
    "The cafeteria opens at eight in the morning. Breakfast is served until ten. Lunch costs six euros with a "
    "drink and dessert. The menu changes every Monday and vegetarian dishes are always available. "
    "Firewall rules are reviewed by the network team every quarter. Ports are closed unless a ticket asks "
    "for them. VPN access needs two-factor authentication and a managed laptop. Security incidents are "
    "reported to the CERT mailbox within one hour."
)


def two_pages(first: str, second: str) -> Document:
    text = first + "\n\n" + second
    return Document("mem.txt", text, pages=[(1, 0, len(first)), (2, len(first) + 2, len(text))])


def test_sentences_have_exact_offsets_and_table_rows_stay_apart():
    text = "Leave is 25 days. Is it paid? Yes!\nRevenue 2018 $ 1,200\nRevenue 2017 $ 1,100\nThe end"
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["Leave is 25 days.", "Is it paid?", "Yes!", "Revenue 2018 $ 1,200",
                                             "Revenue 2017 $ 1,100", "The end"]


@pytest.mark.parametrize("make", [
    lambda e: RecursiveChunker(120, 20),
    lambda e: SemanticChunker(e, max_tokens=40, min_tokens=5),
    lambda e: DoublePassChunker(e, max_tokens=60, min_tokens=5),
    lambda e: SentenceWindowChunker(window=1),
])
def test_every_chunker_keeps_offsets_exact_and_never_crosses_a_page(embedder, make):
    doc = two_pages(TOPICS, "Page two talks about parking. The car park closes at ten at night.")
    spans = make(embedder).split(doc)
    assert spans
    for s in spans:
        ranges = s.parts or ((s.start, s.end),)
        assert s.text == "\n\n".join(doc.text[a:b] for a, b in ranges)
        assert doc.page_at(s.start) == doc.page_at(s.end - 1), "a chunk cites exactly one page"
    covered = "".join(doc.text[a:b] for s in spans for a, b in (s.parts or ((s.start, s.end),)))
    assert "closes at ten at night" in covered and "CERT mailbox" in covered


def test_semantic_chunker_cuts_where_the_topic_changes(embedder):
    text = ("Photosynthesis converts sunlight into chemical energy in plants. Chlorophyll absorbs red and blue "
            "light. Leaves exchange gases through tiny pores called stomata. Plants release oxygen as a by-product. "
            "The central bank raised interest rates by half a point. Inflation reached four percent last year. "
            "Mortgage payments will rise for most households. Bond yields fell after the announcement.")
    spans = SemanticChunker(embedder, max_tokens=120, min_tokens=10, percentile=90).split(Document("m.txt", text))
    assert [s.text[:20] for s in spans] == ["Photosynthesis conve", "The central bank rai"]


def test_semantic_chunker_respects_the_token_bound(embedder):
    doc = Document("mem.txt", " ".join(f"Rule {i} says that form {i} must be signed." for i in range(40)))
    spans = SemanticChunker(embedder, max_tokens=30, min_tokens=5).split(doc)
    assert len(spans) > 5 and all(len(s.text) // 4 <= 30 for s in spans)


def test_double_pass_merges_the_lectures_example_across_an_interruption(embedder):
    """ "The blue, the red." and "Gray and white." end up together across "Football and Tennis." """
    text = "The blue, the red. Football and Tennis. Gray and white."
    chunker = DoublePassChunker(embedder, max_tokens=100, min_tokens=0, percentile=0)
    spans = chunker.split(Document("colours.txt", text))
    assert len(spans) == 2
    colours = next(s for s in spans if "blue" in s.text)
    assert colours.text == "The blue, the red.\n\nGray and white."
    assert [text[a:b] for a, b in colours.parts] == ["The blue, the red.", "Gray and white."]
    sport = next(s for s in spans if "Football" in s.text)
    assert sport.text == "Football and Tennis." and sport.parts == ()


def test_sentence_window_carries_its_neighbours_with_offsets():
    text = "First rule applies. Second rule is about badges. Third rule covers keys. Fourth rule ends it."
    spans = SentenceWindowChunker(window=1, min_chars=5).split(Document("r.txt", text))
    assert [s.text for s in spans] == ["First rule applies.", "Second rule is about badges.",
                                       "Third rule covers keys.", "Fourth rule ends it."]
    second = spans[1]
    assert second.meta["window"] == "First rule applies. Second rule is about badges. Third rule covers keys."
    assert text[second.meta["window_start"]:second.meta["window_end"]] == second.meta["window"]


def test_merged_and_window_chunks_keep_their_spans_in_the_index(tmp_path, embedder):
    p = tmp_path / "colours.txt"
    p.write_text("The blue, the red. Football and Tennis. Gray and white.")
    store = FaissStore(tmp_path / "index")
    chunker = DoublePassChunker(embedder, max_tokens=100, min_tokens=0, percentile=0)
    IngestPipeline(default_loaders(), chunker, embedder, store).ingest([p], "c")
    merged = next(c for c in FaissStore(tmp_path / "index").load().chunks() if "blue" in c.text)
    assert merged.meta["spans"] == [[0, 18], [40, 55]] and (merged.start, merged.end) == (0, 55)
    assert merged.meta["chunker"] == chunker.settings_id


def test_index_refuses_chunks_made_with_other_chunker_settings(tmp_path, embedder):
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    a.write_text("# A\n\nThe badge office is on floor 2.")
    b.write_text("# B\n\nLunch is at noon.")
    store = FaissStore(tmp_path / "index")
    IngestPipeline(default_loaders(), RecursiveChunker(300, 50), embedder, store).ingest([a], "c")
    other = IngestPipeline(default_loaders(), build_chunker("sentence_window"), embedder, store)
    with pytest.raises(IndexSettingsMismatchError, match="recursive:300:50.*consulta reindex"):
        other.ingest([b], "c")
    assert [c.meta["chunker"] for c in FaissStore(tmp_path / "index").load().chunks()] == ["recursive:300:50"]
    # a rebuild under the new settings is what reindex does
    other.ingest_groups({"c": [a, b]}, replace=True)
    assert {c.meta["chunker"] for c in FaissStore(tmp_path / "index").load().chunks()} == {other.chunker.settings_id}


def test_the_generator_is_given_the_window_around_a_sentence_hit(tmp_path):
    from app.container import Services
    from app.settings import Settings
    from tests.conftest import TINY_MODEL

    settings = Settings(data_dir=tmp_path / "data", ingest={"chunker": "sentence_window", "window": 1},
                        serving={"model": TINY_MODEL, "n_ctx": 2048, "max_sequences": 1, "max_tokens": 16,
                                 "n_threads": 2})
    sentences = ["The badge office is on the second floor of building A.",
                 "It opens every weekday from nine in the morning.",
                 "Spare keys are handed out by the porter at the main gate.",
                 "Parking permits cost ten euros a month for all staff."]
    (tmp_path / "rules.txt").write_text(" ".join(sentences))
    services = Services(settings)
    try:
        services.pipeline.ingest([tmp_path / "rules.txt"], "c")
        hits = services.retriever.retrieve("Who hands out spare keys?", k=1)
        assert hits[0].chunk.text == sentences[2]
        messages, used = services.assistant.build_messages("Who hands out spare keys?", hits, "en")
        assert used == 1 and " ".join(sentences[1:]) in messages[-1]["content"]
    finally:
        services.close()


def test_cli_refuses_another_chunker_until_reindex(base_env, tmp_path):
    import json

    from tests.conftest import run_cli

    env = {**base_env, "CONSULTA_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "a.md").write_text("# A\n\nThe badge office is on floor 2. It opens at nine every weekday.")
    (tmp_path / "b.md").write_text("# B\n\nLunch is served at noon in the canteen on the ground floor.")
    assert run_cli(["ingest", str(tmp_path / "a.md")], env).returncode == 0
    env["CONSULTA_INGEST__CHUNKER"] = "sentence_window"
    r = run_cli(["ingest", str(tmp_path / "b.md")], env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "recursive:800:120" in r.stderr and "consulta reindex" in r.stderr
    r = run_cli(["reindex", "--json"], env)
    assert r.returncode == 0, r.stderr
    r = run_cli(["ingest", str(tmp_path / "b.md"), "--json"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total_chunks"] == 2  # short sentences join the next: one chunk a file


def test_a_markdown_heading_stays_with_the_text_under_it():
    """A heading followed by a paragraph as long as a chunk is not a chunk of its own ("## Adding documents"
    alone ranked first for a question about adding documents, and quoted as the answer)."""
    para = ("Consulta reads PDF, Word, HTML, Markdown and text files and splits them into chunks. " * 9).strip()
    text = f"# Guide\n\n## Adding documents\n\n{para}\n\n## Asking\n\n{para}"
    spans = RecursiveChunker(chunk_size=800, chunk_overlap=100).split(Document("guide.md", text))
    assert all(not s.text.strip().startswith("#") or "Consulta reads" in s.text for s in spans), \
        [s.text[:40] for s in spans]
    assert all(text[s.start:s.end] == s.text for s in spans)
    assert any(s.text.startswith("# Guide\n\n## Adding documents\n\nConsulta reads") for s in spans)
