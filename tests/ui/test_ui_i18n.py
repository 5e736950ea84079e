"""Every label exists in English, Spanish and Catalan, with the same placeholders."""

from __future__ import annotations

import string

import pytest

from ui.i18n import DEFAULT_LANGUAGE, LABELS, LANGUAGES, format_ms, t


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_language_has_every_label_with_the_same_placeholders(lang: str):
    english = LABELS[DEFAULT_LANGUAGE]
    assert set(LABELS[lang]) == set(english)
    for key, text in LABELS[lang].items():
        assert text.strip(), key
        assert placeholders(text) == placeholders(english[key]), key


def test_lookup_fills_values_and_falls_back_to_english():
    assert t("es", "chat.reading", count=4) == "Leyendo 4 fragmentos…"
    assert t("es", "chat.reading", count=1) == "Leyendo 1 fragmento…"
    assert t("en", "status.index_chunks", count=12345) == "12,345 passages"
    assert t("xx", "nav.documents") == "Documents"
    assert t("ca", "no.such.key") == "no.such.key"


def test_durations_read_naturally():
    assert format_ms("en", 84.6) == "85 ms"
    assert format_ms("en", 2430) == "2.4 s"
    assert format_ms("ca", 2430) == "2,4 s"
    assert format_ms("es", None) == "–"
