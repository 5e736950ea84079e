"""Language detection of short questions (retrieval/language.py): it picks the BM25 analyser for a query, so a
misread English question is stemmed as Catalan."""

from __future__ import annotations

import pytest

from retrieval.language import detect_language


@pytest.mark.parametrize("text, language", [
    # English questions whose only function words are shared with Catalan ("on", a lower-case "i"): Cranfield's
    ("papers on shock-sound wave interaction .", "en"),
    ("where can i find pressure data on surfaces of swept cylinders .", "en"),
    ("experimental studies on panel flutter .", "en"),
    ("How many holiday days do full-time staff have?", "en"),
    ("¿Cuántos días de vacaciones tienen los trabajadores?", "es"),
    ("¿Dónde está la sede de la empresa?", "es"),
    ("Quants dies de vacances tenen els treballadors?", "ca"),
    ("On és la seu de l'empresa?", "ca"),
    ("On puc trobar el formulari?", "ca"),
    ("Qui signa els contractes i quan?", "ca"),
    ("L’ordre d’instal·lació del paquet", "ca"),  # a typeset apostrophe, as PDFs write it
])
def test_short_questions_are_read_in_their_language(text, language):
    assert detect_language(text) == language
