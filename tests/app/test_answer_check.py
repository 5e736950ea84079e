"""The answer check (negative rejection): the model's yes/no on "do the sources answer this?" can refuse."""

from __future__ import annotations

import dataclasses

import pytest

from app.container import Services
from app.settings import Settings
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def assistant(tmp_path_factory, corpus_dir):
    services = Services(Settings(data_dir=tmp_path_factory.mktemp("check"),
                                 serving={"model": TINY_MODEL, "n_ctx": 4096, "max_sequences": 2, "max_tokens": 16,
                                          "n_threads": 2},
                                 assistant={"verifier": False}))  # the check alone decides here
    services.pipeline.ingest([corpus_dir], "demo")
    yield services.assistant
    services.close()


def test_the_check_scores_the_sources_for_the_question(assistant):
    hits = assistant.retriever.retrieve("When are travel expenses reimbursed?", 2)
    score = assistant.answer_check("When are travel expenses reimbursed?", hits)
    assert isinstance(score, float) and -50 < score < 50


def test_a_no_from_the_check_refuses_and_still_shows_the_closest_sources(assistant):
    question = "When are travel expenses reimbursed?"
    strict = dataclasses.replace(assistant.settings, answer_check=True, answer_check_margin=-1000.0)
    lenient = dataclasses.replace(assistant.settings, answer_check=True, answer_check_margin=1000.0)
    original = assistant.settings
    try:
        assistant.settings = strict
        refused = assistant.answer(question)
        assistant.settings = lenient
        answered = assistant.answer(question)
    finally:
        assistant.settings = original
    assert refused.refused and refused.text.startswith("The documents don't say") and refused.sources
    assert refused.usage["reason"] == "the model judged the sources do not answer"
    assert answered.usage.get("reason") != "the model judged the sources do not answer"
