"""Citations checked after generation: each cited source is matched against the sentence citing it."""

from __future__ import annotations

from app.assistant import Citation, verify_citations

EXPENSES = ("Chapter 2: Expenses. Travel expenses are reimbursed within 30 days when the receipt is uploaded to the "
            "finance portal. Meals abroad are covered up to 45 euros per day.")
HOURS = ("Chapter 1: Working hours. The office opens at 8:00 and closes at 18:00 from Monday to Friday. Staff may "
         "work from home two days per week after agreeing it with their manager.")
DOCUMENT = HOURS + "\n\n" + EXPENSES


def cite(n: int, text: str) -> Citation:
    start = DOCUMENT.index(text)
    return Citation(n, f"c{n}", "/docs/handbook.pdf", None, n, None, start, start + len(text), 0.9, text)


def test_a_supporting_source_gets_its_exact_sentence_and_span(embedder):
    (c,) = verify_citations("Expenses are paid back within a month of uploading the receipt [1].",
                            [cite(1, EXPENSES)], embedder, 0.85)
    assert c.supported
    assert c.snippet == ("Travel expenses are reimbursed within 30 days when the receipt is uploaded to the "
                         "finance portal.")
    assert DOCUMENT[c.snippet_start:c.snippet_end] == c.snippet


def test_a_source_that_does_not_support_its_sentence_is_flagged(embedder):
    got = verify_citations("Staff can work from home twice a week [2]. The company was founded in 1850 by a "
                           "baker [1].", [cite(1, EXPENSES), cite(2, HOURS)], embedder, 0.85)
    by_n = {c.n: c for c in got}
    assert by_n[2].supported and "work from home" in by_n[2].snippet
    assert by_n[1].supported is False and by_n[1].support < 0.85
