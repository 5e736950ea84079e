"""Checks of a drafted answer before it is shown: is it in the right language, does it say it doesn't know,
and do the passages it came from hold what it says?

The 1.5B model copies well and judges poorly, so these are code, not questions to the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app import prompts
from app.answerability import ANSWER_TYPES, ASKING
from retrieval.bm25 import Analyzers
from retrieval.compressor import split_sentences
from retrieval.language import language_scores
from retrieval.neighbours import ANNOUNCES

SHORT_WORDS = 12  # a draft of at most this many words is an answer span, shown with its supporting sentence
QUOTE_WORDS = 40  # a quoted sentence longer than this is cut to the words around the answer
_WORD = re.compile(r"\w{3,}")
# "this or that?": an answer may then repeat words of the question.
# The words that ask for an address: they are not the subject it must be said of.
_ADDRESS_WORDS = ("e mail email address mail correo electrónico dirección correu electrònic adreça web url site "
                  "página pàgina sitio lloc")
_CHOICE = re.compile(r"\w\s+(?:or|o|u|ou)\s+\w", re.IGNORECASE)

# The model's ways of saying that the sources lack the answer, in the three languages (and the old marker).
_DONT_KNOW = re.compile(
    r"NO_ANSWER|\b(i )?(do not|don't|cannot|can't) (know|find|tell|answer)\b|\bno (information|mention)\b"
    r"|\b(is|are) not (mentioned|specified|stated|provided|given)\b"
    r"|\b(do|does|did)(n't| not) (say|mention|specify|state|contain|include|provide)\b"
    r"|\bno (lo )?s[eé]\b|\bno (se )?(menciona|especifica|indica|dice|proporciona|contiene|incluye)n?\b"
    r"|\bno (hay|tengo) informaci[oó]n\b"
    r"|\bno (ho )?s[eé]\b|\bno (s')?(esmenta|esmenten|especifica|especifiquen|indica|indiquen|diu|diuen|"
    r"proporciona|proporcionen|conté|contenen|inclou|inclouen)\b|\bno (hi ha|tinc) informaci[oó]\b"
    r"|\bno (puedo|puc) (responder|respondre|contestar)\b",
    re.IGNORECASE)
_CITE = re.compile(r"\[(\d{1,2})\]")
# A manual page's section after a command ("w3m(1)", "debdiff(1)"): a short answer names the command alone.
_MAN_SECTION = re.compile(r"(?<=[\w.+-])\([1-9][a-z]*\)")
# Tokens that state a specific fact: numbers, paths, file names, identifiers, addresses. A draft that names
# one no passage holds made it up.
_SPECIFIC = re.compile(r"[\w.+-]+@[\w-]+\.\w+|(?:[\w~-]*[/._][\w~-]+)+|\b\w*\d\w*\b")


def says_it_does_not_know(draft: str) -> bool:
    """The draft is (or opens with) the model's own "the sources don't say"."""
    first = _CITE.sub("", draft).strip().split("\n", 1)[0][:200]
    return bool(_DONT_KNOW.search(first))


def restates_question(draft: str, question: str, language: str, analyzers: Analyzers | None = None) -> bool:
    """Every content word of the draft is already in the question ("cowbuilder" asked about cowbuilder,
    "With schroot one prepares the chroot" for "How does one prepare the chroot with schroot?"): it tells the
    asker nothing. A question that offers a choice ("this or that?") is answered by repeating one of its words."""
    analyzer = (analyzers or Analyzers()).get(language)
    said = set(analyzer.terms(_CITE.sub(" ", draft))) - set(analyzer.terms(ASKING))
    if not said or not said <= set(analyzer.terms(question)):
        return False
    for m in _CHOICE.finditer(question):  # the words offered either side of "or"
        before, after = question[:m.start() + 1].split()[-5:], question[m.end() - 1:].split()[:5]
        if said <= set(analyzer.terms(" ".join(before + after))):
            return False
    return True


def off_subject(draft: str, question: str, passages: Sequence[str], language: str,
                analyzers: Analyzers | None = None) -> str | None:
    """The question asks for an e-mail or web address and the draft's one stands nowhere near the question's
    subject in the passages (an author's name asked, a mailing list's address given). Returns that address."""
    analyzer = (analyzers or Analyzers()).get(language)
    subject = set(analyzer.terms(question)) - set(analyzer.terms(f"{ASKING} {_ADDRESS_WORDS}"))
    for kind in ("email", "url"):
        asks, looks = ANSWER_TYPES[kind]
        if not asks.search(question):
            continue
        for m in looks.finditer(_CITE.sub(" ", draft)):
            address = m.group().strip("<>")
            windows = (p[max(0, i.start() - 200):i.end() + 200].replace(address, " ")
                       for p in passages for i in re.finditer(re.escape(address), p))
            if not any(subject & set(analyzer.terms(w)) for w in windows):
                return address
    return None


def only_citations(draft: str) -> bool:
    """Nothing but citation markers and punctuation ("[3]", "[1] [2]")."""
    return not re.sub(r"[\W_]+", "", _CITE.sub("", draft))


def language_of(draft: str) -> str | None:
    """The draft's language when its words say so clearly; None for too little text to tell (a command, a name)."""
    text = _SPECIFIC.sub(" ", _CITE.sub(" ", draft.replace("’", "'")))
    scores = language_scores(text)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] < 3 or ranked[0][1] < 1.5 * ranked[1][1]:
        return None
    return ranked[0][0]


@dataclass(frozen=True, slots=True)
class Grounding:
    """How much of a draft the passages hold: `overlap` is the share of its content words (question words
    aside) found in them; `unsupported` lists the specific tokens (numbers, paths, identifiers) none holds."""

    overlap: float
    unsupported: tuple[str, ...]

    @property
    def grounded(self) -> bool:
        return not self.unsupported and self.overlap >= 0.5


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace("’", "'"))


def grounding(draft: str, question: str, passages: Sequence[str], language: str,
              analyzers: Analyzers | None = None) -> Grounding:
    analyzer = (analyzers or Analyzers()).get(language)
    body = _CITE.sub(" ", draft)
    haystack = _fold(_norm(" ".join(passages), language) + " " + " ".join(passages))
    specific = [t.strip(".-_/") for t in _SPECIFIC.findall(body)]
    unsupported = tuple(t for t in specific if (len(t) > 1 or t.isdigit()) and _fold(t) not in haystack
                        and _fold(t) not in _fold(question))
    asked = set(analyzer.terms(question))
    words = [t for t in analyzer.terms(body) if t not in asked]
    if not words:
        return Grounding(1.0, unsupported)
    held = set()
    for p in passages:
        held |= set(analyzer.terms(p)) | set(analyzer.terms(_norm(p, language)))
    return Grounding(sum(w in held for w in words) / len(words), unsupported)


class _Source(Protocol):
    n: int
    text: str
    best: str | None  # its sentence closest to the question in meaning, when known


# Number words a model may turn into digits ("dos días" -> "2 días"), 2 to 12, by language.
_NUMBER_WORDS = {
    "en": "two three four five six seven eight nine ten eleven twelve",
    "es": "dos tres cuatro cinco seis siete ocho nueve diez once doce",
    "ca": "dos tres quatre cinc sis set vuit nou deu onze dotze",
}
_DIGITS = {lang: {w: str(i) for i, w in enumerate(words.split(), start=2)} for lang, words in _NUMBER_WORDS.items()}
_DIGITS["ca"]["dues"] = "2"


def _norm(text: str, language: str = "en") -> str:
    words = re.sub(r"[«»\"“”‘’'`]", " ", text.lower()).split()
    digits = _DIGITS.get(language, {})
    return " ".join(digits.get(w, w) for w in words)


def _sentence_with(text: str, span: str, language: str = "en") -> str | None:
    """The sentence of `text` that holds `span` (case, spacing and number words aside), or None."""
    target = _norm(span, language)
    for a, b in split_sentences(text):
        if target and target in _norm(text[a:b], language):
            return text[a:b]
    return None


def trimmed(sentence: str, around: str = "", limit: int = QUOTE_WORDS) -> str:
    """At most `limit` words of a sentence to quote, centred on `around` when it is there."""
    words = sentence.split()
    if len(words) <= limit:
        return sentence
    at = sentence.lower().find(around.lower()) if around else -1
    return _window(words, len(sentence[:at].split()) if at >= 0 else 0, limit)


def _window(words: list[str], centre: int, limit: int) -> str:
    """`limit` words with word `centre` a third of the way in, marked "…" where words were left out."""
    start = max(0, min(centre - limit // 3, len(words) - limit))
    return ("… " if start else "") + " ".join(words[start:start + limit]) + (" …" if start + limit < len(words) else "")


def with_what_follows(text: str, sentence: str) -> tuple[str, str]:
    """(the sentence, "") or, for a sentence of `text` that introduces what follows ("... ejecutando: $"), (it
    with its next sentence, that next sentence): a quote must not stop just before the command it announces."""
    if not ANNOUNCES.search(sentence) or not sentence.split():
        return sentence, ""
    found = re.search(r"\s+".join(map(re.escape, sentence.split())), text)  # the passage may break its lines
    if found is None:
        return sentence, ""
    tail = text[found.end():]
    spans = split_sentences(tail)
    if not spans:
        return sentence, ""
    a, b = spans[0]
    return " ".join(text[found.start():found.end() + b].split()), " ".join(tail[a:b].split())


def focused(sentence: str, question: str, limit: int = QUOTE_WORDS, span: int = 15) -> str:
    """At most `limit` words of a sentence to quote, around its `span` words that share the most words with the
    question. A PDF's "sentence" runs on across lines without a full stop (a list, a command and the text after
    it); its first words are rarely the ones the question asks about."""
    words = sentence.split()
    if len(words) <= limit:
        return sentence
    asked = {w.lower()[:5] for w in re.findall(r"\w{4,}", question)}
    hits = [any(t.lower()[:5] in asked for t in re.findall(r"\w{4,}", w)) for w in words]
    counts = [sum(hits[i:i + span]) for i in range(len(words))]
    best = max(range(len(words)), key=lambda i: (counts[i], -i))
    return _window(words, best + hits[best:].index(True) if counts[best] else 0, limit)


def best_sentence(text: str, words_of: str) -> str:
    """The sentence of `text` that shares the most words with `words_of`."""
    words = {w.lower() for w in _WORD.findall(words_of)}
    spans = split_sentences(text) or [(0, len(text))]
    a, b = max(spans, key=lambda ab: len(words & {w.lower() for w in _WORD.findall(text[ab[0]:ab[1]])}))
    return text[a:b]


def _is_source_number(body: str, question: str, sources: Sequence[_Source]) -> bool:
    """The draft is a lone number that is one of the sources' numbers, for a question that does not ask for a
    number: the model pointed at a source without its brackets."""
    asks_number = ANSWER_TYPES["number"][0].search(question) is not None
    return body.isdigit() and not asks_number and any(s.n == int(body) for s in sources)


def is_bare(draft: str, question: str, sources: Sequence[_Source]) -> bool:
    """The draft is only a pointer at a source: citation markers ("[2]"), or a lone source number ("1 [1]") for
    a question that does not ask for a number."""
    body = _CITE.sub(" ", draft).strip().strip(".:;,").strip()
    return bool(draft.strip()) and not says_it_does_not_know(draft) and (
        not body or _is_source_number(body, question, sources))


def compose(draft: str, question: str, sources: Sequence[_Source], language: str) -> tuple[str | None, str]:
    """The answer to show for a draft, or (None, why not).

    A short draft (the exact words that answer) is shown with the sentence of the source that holds it; a
    draft that is only a citation gives that source's sentence closest to the question; a sentence copied from
    a passage in another language is shown as a quote; a draft that names what no passage holds, or that says
    the sources don't answer, is not shown.
    """
    if not draft.strip():
        return None, "empty draft"
    if says_it_does_not_know(draft):
        return None, "the model says the sources do not answer"
    numbers = [int(m) for m in _CITE.findall(draft)]
    cited = [s for s in sources if s.n in numbers]
    order = cited + [s for s in sources if s not in cited]
    body = _CITE.sub(" ", draft).strip().strip(".:;,").strip()
    if _is_source_number(body, question, sources):
        # "1 [1]" for "When did the movement begin?": the model wrote the source's number, not an answer
        order = [s for s in sources if s.n == int(body)] + [s for s in order if s.n != int(body)]
        body = ""
    if not body:
        if not order:
            return None, "only citations"
        s = order[0]
        quoted, announced = with_what_follows(s.text, getattr(s, "best", None) or best_sentence(s.text, question))
        shown = trimmed(quoted, announced) if announced else focused(quoted, question)
        return f"{prompts.quote(language, shown)} [{s.n}]", "only citations"
    g = grounding(body, question, [s.text for s in sources], language)
    if g.unsupported:
        return None, "names what no passage holds: " + ", ".join(g.unsupported[:3])
    if restates_question(body, question, language):
        return None, "the answer only repeats the question"
    address = off_subject(body, question, [s.text for s in sources], language)
    if address is not None:
        return None, f"{address} is not said of the question's subject"
    if len(body.split()) <= SHORT_WORDS:
        body = _MAN_SECTION.sub("", body)
        for s in order:
            sentence = _sentence_with(s.text, body, language)
            if sentence is not None:
                return f"{body} [{s.n}]\n\n{prompts.quote(language, trimmed(sentence, body))}", ""
        if g.overlap < 0.5 or not order:
            return None, "the answer's words are not in the passages"
        s = order[0]
        return f"{body} [{s.n}]\n\n{prompts.quote(language, trimmed(best_sentence(s.text, body), body))}", ""
    said = language_of(body)
    marks = " ".join(f"[{s.n}]" for s in cited) or (f"[{order[0].n}]" if order else "")
    if said is not None and said != language:
        return f"{prompts.quote(language, body)} {marks}".strip(), "quoted: written in another language"
    if not cited and marks:
        return f"{draft.strip()} {marks}", ""
    return draft.strip(), ""
