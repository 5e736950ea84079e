"""A passage the chunker cut mid-sentence is made whole from its document's chunks beside it (a real ingestion
into a real index: the recursive chunker's 800-character chunks, cut at the line breaks of hard-wrapped text
as a PDF's lines are)."""

from __future__ import annotations

import textwrap

import pytest

from app.container import Services
from app.grounding import compose
from app.settings import Settings
from retrieval.neighbours import SentenceCompleter
from retrieval.types import Chunk, Hit

FILLER = ("El sistema pbuilder crea un entorno limpio para compilar paquetes y comprobar sus dependencias de "
          "compilación sin tocar el sistema principal. ")
ANNOUNCE = "Ahora puedes inicializar el sistema local pbuilder chroot por primera vez ejecutando:"


def manual() -> str:
    """Hard-wrapped lines whose announcing line ends just before the chunker's 800 characters, so that the
    command it announces opens the next chunk."""
    lead = "\n".join(textwrap.wrap(FILLER * 5, 78))
    while len(lead) + 1 + len(ANNOUNCE) < 790:
        lead = lead.replace("limpio", "muy limpio", 1) if len(lead) + len(ANNOUNCE) < 780 else lead + " Sí."
    return (lead + "\n" + ANNOUNCE + "\n$ sudo pbuilder create\ny después, cada semana, lo actualizas con la\n"
            "orden pbuilder update. " + "\n".join(textwrap.wrap(FILLER * 4, 78)) + "\n")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, embedder):
    docs = tmp_path_factory.mktemp("manual")
    (docs / "pbuilder.txt").write_text(manual(), encoding="utf-8")
    (docs / "wrapped.txt").write_text("\n".join(textwrap.wrap(FILLER * 20, 60)) + "\n", encoding="utf-8")
    services = Services(Settings(data_dir=tmp_path_factory.mktemp("data")))
    services.pipeline.ingest([docs], "manuales")
    yield services
    services.close()


def _chunks(services, name):
    return sorted((c for c in services.store.ensure_current().chunks() if c.source.endswith(name)),
                  key=lambda c: c.start)


def test_a_passage_ending_on_a_colon_gets_the_command_it_announces(ingested):
    first = _chunks(ingested, "pbuilder.txt")[0]
    assert first.text.endswith("ejecutando:"), "the chunker must cut right after the announcing line"
    [done] = SentenceCompleter(ingested.store).complete([Hit(first, 0.9, 0.8)])
    assert done.chunk.text == first.text + "\n$ sudo pbuilder create", "the command's line, and no more"
    assert done.chunk.id == first.id and done.chunk.page == first.page and done.score == 0.9
    assert (done.chunk.start, done.chunk.end) == (first.start, first.end + len("\n$ sudo pbuilder create"))


def test_passages_cut_mid_sentence_are_made_whole(ingested):
    chunks = _chunks(ingested, "wrapped.txt")
    completer = SentenceCompleter(ingested.store)
    cut_ends = [c for c in chunks[:-1] if not c.text.rstrip().endswith(".")]
    cut_starts = [c for c in chunks[1:] if c.text[:1].islower()]
    assert cut_ends and cut_starts, "hard-wrapped prose must be cut mid-sentence somewhere"
    for chunk in cut_ends + cut_starts:
        [done] = completer.complete([Hit(chunk, 0.5)])
        text = done.chunk.text
        assert chunk.text in text and text.rstrip().endswith(".") and text[:1].isupper(), text
        assert text.count("El sistema") <= chunk.text.count("El sistema") + 2, "one sentence each side at most"


def test_a_whole_passage_or_a_last_one_is_left_alone(ingested):
    last = _chunks(ingested, "wrapped.txt")[-1]
    completer = SentenceCompleter(ingested.store)
    assert last.text.rstrip().endswith(".") and completer.continuation(last) == "", "nothing after the last"
    ended = Chunk("x", "d", "Una frase entera.", 0, 17)
    assert completer.complete([Hit(ended, 0.5)]) == [Hit(ended, 0.5)]


def test_the_quote_of_a_bare_citation_reaches_the_command(ingested):
    """What the assistant shows when the model only points at the passage: the announcing sentence and the
    command, not the sentence cut before it."""
    first = _chunks(ingested, "pbuilder.txt")[0]
    [done] = SentenceCompleter(ingested.store).complete([Hit(first, 0.9, 0.8)])
    source = type("S", (), {"n": 1, "text": done.chunk.text, "best": ANNOUNCE})()
    text, _ = compose("[1]", "¿Con qué orden se crea el chroot de pbuilder?", [source], "es")
    assert text is not None and "sudo pbuilder create" in text, text
