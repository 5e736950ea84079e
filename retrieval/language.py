"""Language of a text among the ones Consulta serves (English, Spanish, Catalan).

Used at ingestion (each chunk's language) and at query time (the BM25 analyser and the answer's language), so it sits
here, in the bottom layer that imports nothing of ours.
"""

from __future__ import annotations

import re

SUPPORTED = ("en", "es", "ca")

# Function words that tell the three languages apart even in short questions.
_WORDS = {
    "en": set("the of and to is in what which who how does do are was were for with this that on by from "
              "be it an not have has can why when where".split()),
    "es": set("el la los las de del y que es en qué cuál cuáles quién cómo por para con una un se su "
              "está son fue cuando dónde porque pero más lo al".split()),
    "ca": set("el la els les de del i que és en què quin quina quins qui com per amb una un es seu "
              "està són va quan on perquè però més ho al dels amb això aquest aquesta".split()),
}
_DISTINCT = {
    "en": set("the what which who how many much does do is are was were days year years with this that "
              "there their they should would could".split()),
    "es": set("qué cuál cuáles cómo está son los las y para pero más dónde porque una cuántos cuántas "
              "cuánto días año años tiene tienen hay puede pueden hacer sobre desde también muy".split()),
    "ca": set("què quin quina quins quines com és els les dels amb però més perquè això aquest aquesta "
              "quants quantes quant dies any anys té tenen hi pot poden fer sobre des també molt".split()),
}
_TOKEN = re.compile(r"[a-zà-ÿ·']+")


def detect_language(text: str, default: str = "en") -> str:
    """Best guess among en/es/ca: langdetect when installed and confident, else function-word counts."""
    sample = text[:4000]
    try:
        from langdetect import DetectorFactory, detect_langs

        DetectorFactory.seed = 0
        for guess in detect_langs(sample):
            if guess.lang in SUPPORTED and guess.prob > 0.6 and len(sample) > 200:
                return guess.lang
    except Exception:  # noqa: BLE001 - langdetect raises on empty/odd text; fall back below
        pass
    scores = language_scores(sample)
    if not any(scores.values()):
        return default
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else default


def language_scores(text: str) -> dict[str, float]:
    """Evidence for each language from function words, accents and spelling (0 each for no words)."""
    sample = text[:4000].replace("’", "'")  # typeset text (PDFs) writes the apostrophe as ’
    tokens = _TOKEN.findall(sample.lower())
    if not tokens:
        return {lang: 0.0 for lang in _WORDS}
    scores = {lang: float(sum(t in words for t in tokens) + 2 * sum(t in _DISTINCT.get(lang, ()) for t in tokens))
              for lang, words in _WORDS.items()}
    if "¿" in sample or "¡" in sample:
        scores["es"] += 3
    low = sample.lower()
    if "l·l" in low:
        scores["ca"] += 2
    scores["ca"] += 2 * len(re.findall(r"\b[dls]'[a-zà-ú]", low))  # elided articles: l'ordre, d'instal·lació
    scores["ca"] += 2 * len(re.findall(r"[àèò]|ny[aeiou]", low))  # grave accents and -ny- are Catalan
    scores["es"] += 2 * low.count("ñ")
    return scores
