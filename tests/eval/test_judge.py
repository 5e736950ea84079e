"""The judge's prompt always fits the per-request context: passages and answers are cut, never overflow."""

from __future__ import annotations

import pytest

from app.models import resolve_model
from eval.judge import JudgePromptTooLong, TriadJudge, truncate_tokens
from serving.engine import BatchingEngine
from tests.conftest import TINY_MODEL

PASSAGE = ("The office opens at 8:00 and closes at 18:00 from Monday to Friday. Staff may work from home two "
           "days per week after agreeing it with their manager. ")


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory):
    """SmolLM2 with 512 tokens per request (1024 shared by two), a quarter of what the judge used to assume."""
    engine = BatchingEngine(str(resolve_model(TINY_MODEL, tmp_path_factory.mktemp("models"))), n_ctx=1024,
                            max_sequences=2, n_threads=2, n_batch=256)
    engine.warm_up()
    yield engine
    engine.close()


def test_a_huge_passage_and_a_long_answer_are_cut_to_fit(small_engine):
    judge = TriadJudge(small_engine, context_tokens=512, max_tokens=24)  # a short reply keeps the test quick
    question = "At what time does the office open?"
    passages = [PASSAGE * 60, PASSAGE * 10]  # about 2,000 and 350 tokens
    answer = "The office opens at 8:00 in the morning, as the handbook says. " * 40  # about 600 tokens
    messages = judge.messages(question, passages, answer)
    prompt = messages[1]["content"]
    assert prompt.startswith("CONTEXT:\n[1] The office opens at 8:00")  # the passage's start is kept
    assert "[2]" not in prompt and ' ..." says' in prompt  # the second dropped, the answer cut
    assert question in prompt
    verdict = judge.judge(question, passages, answer)  # the engine accepts it (it refuses what does not fit)
    assert verdict.reason.strip()


def test_a_short_triple_is_judged_whole(small_engine):
    judge = TriadJudge(small_engine, context_tokens=512)
    prompt = judge.messages("When does the office open?", [PASSAGE], "At 8:00.")[1]["content"]
    assert f"[1] {' '.join(PASSAGE.split())}" in prompt and '"At 8:00."' in prompt


def test_a_question_that_leaves_no_room_is_refused_before_the_engine(small_engine):
    judge = TriadJudge(small_engine, context_tokens=512)
    with pytest.raises(JudgePromptTooLong, match="tokens"):
        judge.judge("When does the office open? " * 80, [PASSAGE], "At 8:00.")


def test_truncate_tokens_keeps_whole_words_within_the_limit(small_engine):
    count = small_engine.count_tokens
    text = PASSAGE * 5
    cut = truncate_tokens(count, text, 30)
    assert count(cut) <= 30 and cut.endswith(" ...") and text.startswith(cut[:-4])
    assert truncate_tokens(count, "short", 30) == "short"
    assert count(truncate_tokens(count, "x" * 500, 10)) <= 10
