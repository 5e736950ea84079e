"""Metrics against values worked out by hand on tiny cases."""

from __future__ import annotations

import math

import pytest

from eval import metrics as M
from eval.judge import parse_verdict


def test_retrieval_metrics_hand_computed():
    ranked = ["a", "b", "c"]
    rel = {"b": 1, "c": 2, "d": 1}
    # DCG = 0 + (2^1-1)/log2(3) + (2^2-1)/log2(4); ideal gains 2,1,1 -> 3 + 1/log2(3) + 1/2
    dcg = 1 / math.log2(3) + 3 / 2
    ideal = 3 + 1 / math.log2(3) + 0.5
    assert M.ndcg_at_k(ranked, rel, 3) == pytest.approx(dcg / ideal)
    assert M.ndcg_at_k(ranked, rel, 3) == pytest.approx(0.51585, abs=1e-5)
    assert M.mrr_at_k(ranked, rel, 3) == pytest.approx(0.5)
    assert M.mrr_at_k(ranked, rel, 1) == 0.0
    assert M.hit_at_k(ranked, rel, 1) == 0.0 and M.hit_at_k(ranked, rel, 2) == 1.0
    assert M.recall_at_k(ranked, rel, 3) == pytest.approx(2 / 3)
    assert M.ndcg_at_k(["b", "c", "d"], {"b": 1}, 3) == 1.0
    assert M.ndcg_at_k(["x"], {}, 3) == 0.0


def test_context_precision_is_average_precision_of_the_context():
    assert M.context_precision(["r1", "n", "r2"], {"r1": 1, "r2": 1}) == pytest.approx((1 + 2 / 3) / 2)
    assert M.context_precision(["n", "r"], {"r": 1}) == pytest.approx(0.5)
    assert M.context_precision(["n"], {"r": 1}) == 0.0


def test_dedupe_keeps_first_rank_of_each_document():
    assert M.dedupe(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_squad_normalisation_em_and_f1():
    assert M.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert M.exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert M.exact_match("Eiffel", ["eiffel tower"]) == 0.0
    # pred tokens: cat sat on mat; ref: cat on mat -> P 3/4, R 1 -> F1 6/7
    assert M.token_f1("the cat sat on the mat", ["a cat on a mat"]) == pytest.approx(6 / 7)
    assert M.token_f1("nothing shared", ["cat"]) == 0.0
    assert M.token_f1("x", ["cat", "x"]) == 1.0  # best reference
    assert M.contains_answer("It opens at 8:00 [1].", ["8:00"]) == 1.0
    assert M.contains_answer("It opens at 18:00.", ["8:00"]) == 0.0


def test_numeric_answers_match_within_one_percent():
    """FinanceBench's references are bare figures; the model writes them as people do."""
    assert M.numeric_match("Net income was $11,588 million [1].", ["$11588.00"]) == 1.0
    assert M.numeric_match("The margin is about 5.35% [2].", ["5.4%"]) == 1.0
    assert M.numeric_match("Capital expenditure was $1,577 million.", ["$1577.00"]) == 1.0
    assert M.numeric_match("Total assets were $3,890 million [1].", ["$59268.00"]) == 0.0
    assert M.numeric_match("See the table [1].", ["1"]) == 0.0, "a citation marker is not the number 1"
    assert M.numeric_match("It fell by -2.0 points.", ["-2"]) == 1.0
    assert M.numeric_match("Corporate bonds, about 82%.", ["the biggest is corporate bonds"]) is None
    assert M.numeric_reference("USD 1,577.5") == 1577.5 and M.numeric_reference("5.4 percent") == 5.4


def test_rouge_l_hand_computed():
    # LCS(police killed the gunman, police kill the gunman) = police the gunman: P = R = 3/4
    assert M.rouge_l("police killed the gunman", ["police kill the gunman"]) == pytest.approx(0.75)
    # LCS with "the gunman kill police" is "the gunman": P = R = 1/2
    assert M.rouge_l("police killed the gunman", ["the gunman kill police"]) == pytest.approx(0.5)
    assert M.rouge_l("", ["x"]) == 0.0


def test_bleu_hand_computed():
    # 1-grams 5/6; 2-grams (3+1)/(5+1); 3-grams (1+1)/(4+1); 4-grams (0+1)/(3+1); equal lengths: BP = 1
    expected = (5 / 6 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert M.bleu("the cat sat on the mat", ["the cat is on the mat"]) == pytest.approx(expected)
    # two tokens against six: orders 1 and 2 only, both precise; brevity penalty exp(1 - 6/2)
    assert M.bleu("the cat", ["the cat sat on the mat"]) == pytest.approx(math.exp(-2))
    assert M.bleu("a b c d e", ["a b c d e"]) == pytest.approx(1.0)
    assert M.bleu("zzz", ["the cat"]) == 0.0


def test_summaries():
    assert M.percentile([4, 1, 3, 2], 0.5) == 2.5
    assert M.percentile([None], 0.5) is None
    assert M.mean([1, None, 0]) == 0.5
    # po 3/4, pe = .5*.25 + .5*.75 = .5 -> kappa .5
    assert M.cohen_kappa([True, True, False, False], [True, False, False, False]) == pytest.approx(0.5)


def test_judge_reply_parsing_rescales_and_keeps_the_reason():
    v = parse_verdict('Here: {"reason": "The answer \\"8:00\\" is in [1].", "faithfulness": 5, '
                      '"answer_relevance": 3, "context_relevance": 1}')
    assert (v.faithfulness, v.answer_relevance, v.context_relevance) == (1.0, 0.5, 0.0)
    assert v.reason.startswith("The answer")
    broken = parse_verdict("I think it is fine")
    assert broken.faithfulness is None and broken.reason == "I think it is fine"
