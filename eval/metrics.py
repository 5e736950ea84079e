"""Metric definitions: retrieval ranking, answer overlap, refusals and citations. Pure functions, no models.

Every metric here is defined in METRIC_DEFINITIONS, which the report prints next to the figures.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

METRIC_DEFINITIONS: dict[str, str] = {
    "retrieval.hit@k": "Share of questions with at least one relevant document among the first k retrieved.",
    "retrieval.mrr@k": "Mean reciprocal rank: 1/rank of the first relevant document in the top k (0 if none).",
    "retrieval.ndcg@k": "Normalised discounted cumulative gain at k with graded relevance: "
                        "sum (2^rel - 1)/log2(rank + 1), divided by the same sum for the ideal ranking.",
    "retrieval.recall@k": "Relevant documents found in the top k over all relevant documents of the question.",
    "retrieval.context_precision": "Mean precision@i over the ranks i that hold a relevant document among the "
                                   "passages given to the model (average precision of the context, RAGAS-style).",
    "answer.em": "Exact match after SQuAD normalisation (lower case, no punctuation, no articles a/an/the, "
                 "collapsed spaces) against any reference; answerable questions only.",
    "answer.f1": "SQuAD token F1 (bag of normalised tokens) against the best reference; answerable questions.",
    "answer.contains": "The answer contains a normalised reference (lenient accuracy for chatty answers).",
    "answer.numeric": "Questions whose reference is a bare number (an amount, a percentage): the answer states "
                      "that number within 1% (thousands separators, currency and % signs ignored; citation "
                      "markers [n] are not numbers). Absent when no reference is a number.",
    "answer.rouge_l": "ROUGE-L F1: longest common token subsequence, F = 2PR/(P+R), best reference.",
    "answer.bleu": "Sentence BLEU-4 (uniform weights, brevity penalty, add-one smoothing for n>1, Lin & Och "
                   "2004), best over references; reported 0-1.",
    "answer.semantic_similarity": "Cosine of the answer and best reference embeddings (the bundled embedder).",
    "refusal.unanswerable_rate": "Negative rejection: share of unanswerable questions the assistant refused.",
    "refusal.false_rate": "False refusals: share of answerable questions the assistant refused.",
    "citation.page_accuracy": "Among answered questions with an evidence page: share where a cited passage "
                              "is on an evidence page of the evidence document.",
    "citation.source_accuracy": "Among answered questions: share where a cited passage comes from a gold "
                                "document (passage / file).",
    "faithfulness": "Judge (local LLM, G-Eval rubric 1-5, rescaled 0-1): are the answer's claims supported "
                    "by the retrieved context? Answered questions only.",
    "answer_relevance": "Judge: does the answer address the question? Answered questions only.",
    "context_relevance": "Judge: do the retrieved passages hold what is needed to answer?",
    "noise.f1": "Token F1 on answerable questions when random distractor passages are added to the context.",
    "noise.f1_drop": "answer.f1 minus noise.f1 on the same questions (lower is more robust).",
    "latency.retrieval_ms_p50": "Median retrieval time (embedding, search, fusion) per question.",
    "latency.ttft_ms_p50": "Median time from the question to the first generated token (includes queueing).",
    "latency.total_ms_p50": "Median time from the question to the full answer.",
    "latency.total_ms_p95": "95th percentile of the time to the full answer.",
    "tokens.prompt_mean": "Mean prompt tokens per answered question.",
    "tokens.completion_mean": "Mean generated tokens per answered question.",
    "throughput.questions_per_min": "Questions answered per minute of wall time, concurrently through the engine.",
}


# -- retrieval -------------------------------------------------------------------------------------

def hit_at_k(ranked: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    return float(any(relevant.get(d, 0) > 0 for d in ranked[:k]))


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    for i, d in enumerate(ranked[:k], start=1):
        if relevant.get(d, 0) > 0:
            return 1.0 / i
    return 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    rel = {d for d, g in relevant.items() if g > 0}
    if not rel:
        return 0.0
    return len(rel & set(ranked[:k])) / len(rel)


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    """Exponential gain (2^rel - 1), log2(rank + 1) discount, as trec_eval / BEIR (pytrec_eval) compute it."""
    def dcg(gains: Sequence[float]) -> float:
        return sum((2 ** g - 1) / math.log2(i + 1) for i, g in enumerate(gains, start=1))

    ideal = dcg(sorted((g for g in relevant.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([relevant.get(d, 0) for d in ranked[:k]]) / ideal


def context_precision(ranked: Sequence[str], relevant: Mapping[str, float]) -> float:
    """Average precision over the given context: mean of precision@i at each relevant rank i."""
    hits, total = 0, 0.0
    for i, d in enumerate(ranked, start=1):
        if relevant.get(d, 0) > 0:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def dedupe(ids: Sequence[str]) -> list[str]:
    """Document ids in first-seen order: several chunks of one document count once, at their best rank."""
    seen: set[str] = set()
    out = []
    for d in ids:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


# -- answers (SQuAD normalisation, as the official evaluate-v2.0.py) --------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation) | {"¿", "¡", "«", "»", "“", "”", "‘", "’", "–", "—"}


def normalize_answer(s: str) -> str:
    """Lower case, remove punctuation, articles (English a/an/the) and extra whitespace."""
    s = unicodedata.normalize("NFC", s.lower())
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    return max((float(normalize_answer(prediction) == normalize_answer(r)) for r in references), default=0.0)


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    p, r = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * p * r / (p + r)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(r).split()) for r in references), default=0.0)


def contains_answer(prediction: str, references: Sequence[str]) -> float:
    p = f" {normalize_answer(prediction)} "
    return float(any(f" {normalize_answer(r)} " in p for r in references if normalize_answer(r)))


def _tokens(s: str) -> list[str]:
    return re.findall(r"\w+", unicodedata.normalize("NFC", s.lower()))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F1 on lower-cased word tokens (as rouge-score's rougeL without stemming), best reference."""
    pred = _tokens(prediction)
    best = 0.0
    for r in references:
        ref = _tokens(r)
        lcs = _lcs(pred, ref) if pred and ref else 0
        if lcs:
            p, rec = lcs / len(pred), lcs / len(ref)
            best = max(best, 2 * p * rec / (p + rec))
    return best


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(prediction: str, reference: str, max_n: int = 4) -> float:
    """BLEU-4 of one sentence against one reference with add-one smoothing for n > 1 (Lin & Och 2004).

    Short answers make most higher-order n-gram counts zero, so unsmoothed sentence BLEU would be 0 for
    nearly every answer; with fewer than n tokens on either side the order n is left out.
    """
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return 0.0
    orders = [n for n in range(1, max_n + 1) if len(pred) >= n and len(ref) >= n]
    log_p = 0.0
    for n in orders:
        p_ng, r_ng = _ngrams(pred, n), _ngrams(ref, n)
        match = sum((p_ng & r_ng).values())
        total = sum(p_ng.values())
        if n == 1:
            if match == 0:
                return 0.0
            log_p += math.log(match / total)
        else:
            log_p += math.log((match + 1) / (total + 1))
    bp = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return bp * math.exp(log_p / len(orders))


def bleu(prediction: str, references: Sequence[str]) -> float:
    return max((sentence_bleu(prediction, r) for r in references), default=0.0)


# -- numeric answers (FinanceBench: "$1577.00", "5.4%") ------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.])[-−]?\d[\d,]*(?:\.\d+)?")
_CITATION_MARK = re.compile(r"\[\d+(?:\s*[,;]\s*\d+)*\]")
_NUMERIC_REFERENCE = re.compile(r"^\s*(?:usd|us\$|\$|€|£)?\s*([-−]?\d[\d,]*(?:\.\d+)?)\s*(?:%|percent)?\s*$",
                                re.IGNORECASE)


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").replace("−", "-"))
    except ValueError:
        return None


def numeric_reference(reference: str) -> float | None:
    """The value of a reference that is just a number (an amount, a figure, a percentage), else None."""
    m = _NUMERIC_REFERENCE.match(reference)
    return _number(m.group(1)) if m else None


def numeric_match(prediction: str, references: Sequence[str], rel_tol: float = 0.01) -> float | None:
    """1.0 if the answer states a numeric reference's value within rel_tol ("$11,588 million" for "$11588.00",
    "5.35%" for "5.4%"); None when no reference is a bare number. Citation markers such as [1] are not read
    as numbers."""
    values = [v for v in map(numeric_reference, references) if v is not None]
    if not values:
        return None
    stated = [n for n in map(_number, _NUMBER.findall(_CITATION_MARK.sub(" ", prediction))) if n is not None]
    return float(any(math.isclose(n, v, rel_tol=rel_tol, abs_tol=1e-9) for n in stated for v in values))


# -- summaries -------------------------------------------------------------------------------------

def mean(values: Sequence[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return sum(vs) / len(vs) if vs else None


def percentile(values: Sequence[float | None], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    vs = sorted(v for v in values if v is not None)
    if not vs:
        return None
    pos = (len(vs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return vs[lo] + (vs[hi] - vs[lo]) * (pos - lo)


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Agreement beyond chance of two binary raters."""
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)
