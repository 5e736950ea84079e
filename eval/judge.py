"""The RAG triad judged by the local LLM, with a G-Eval-style rubric, and the judge's calibration.

G-Eval (Liu et al. 2023) gives the judge the criteria, the evaluation steps and a 1-5 scale, and asks for
the score after the reasoning. We ask for the three scores of the RAG triad in one reply (a JSON object
with the reason first), rescale 1-5 to 0-1, and keep the reason for the report.

Calibration: on SQuAD 2.0 passages we know the truth of constructed cases, so the judge's verdicts can be
scored against them: (gold passage, reference answer) is faithful and its context relevant; (gold passage,
an answer to another article's question) is unfaithful; (another article's passage, the reference answer)
is neither faithful nor relevant context. The agreement goes into every report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eval.metrics import cohen_kappa
from serving.generator import Generator, SamplingParams

logger = logging.getLogger(__name__)

RUBRIC_VERSION = "triad-v3"
CRITERIA = ("faithfulness", "answer_relevance", "context_relevance")

JUDGE_SYSTEM = "You are a strict grader of a document assistant's answers. You reply with JSON only."
# The answer is named again inside each criterion: small judges otherwise grade the answer they would give.
JUDGE_PROMPT = """CONTEXT:
{context}

QUESTION: {question}
PROPOSED ANSWER: {answer}

Grade the PROPOSED ANSWER. Do not answer the QUESTION yourself; judge only the PROPOSED ANSWER "{answer}".
faithfulness: does the CONTEXT say what "{answer}" says, as the answer to the QUESTION? If the CONTEXT gives a \
different answer, or does not mention it, the score is 1; partly stated, 3; fully stated, 5.
answer_relevance: does "{answer}" respond to what the QUESTION asks (a date for "when", a person for "who", \
...)? 1 (off-topic) to 5 (directly).
context_relevance: does the CONTEXT contain the answer to the QUESTION at all? 1 = no, 3 = partly, 5 = yes.
Reply with JSON: {{"answer_in_context": "yes or no", "reason": "<one sentence>", "faithfulness": 1-5, \
"answer_relevance": 1-5, "context_relevance": 1-5}}"""


@dataclass(slots=True)
class Verdict:
    faithfulness: float | None
    answer_relevance: float | None
    context_relevance: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_verdict(text: str) -> Verdict:
    """Scores (1-5 rescaled to 0-1) and the reason from the judge's reply; missing scores are None."""
    scores: dict[str, float | None] = {}
    for c in CRITERIA:
        m = re.search(rf'"?{c}"?\s*[:=]\s*"?([1-5](?:\.\d+)?)', text)
        scores[c] = (min(5.0, float(m.group(1))) - 1) / 4 if m else None
    m = re.search(r'"reason"\s*:\s*"((?:[^"\\]|\\.)*)"?', text, re.S)
    reason = m.group(1) if m else text.strip()
    return Verdict(scores["faithfulness"], scores["answer_relevance"], scores["context_relevance"],
                   " ".join(reason.split())[:600])


class JudgePromptTooLong(ValueError):
    """The judge's prompt cannot be fitted to the per-request context even with its texts cut (seen by the
    person reading the report, as the question's error)."""


TEMPLATE_MARGIN = 32  # tokens of chat markup when the generator cannot render its template (remote backends)
MIN_CONTEXT_TOKENS = 64  # passage tokens below which a verdict means nothing


def truncate_tokens(count: Callable[[str], int], text: str, limit: int) -> str:
    """The longest start of `text` (whole words where possible, then "...") that takes at most `limit` tokens."""
    if count(text) <= limit:
        return text
    if limit <= 1:
        return ""
    words = text.split(" ")
    lo, hi = 0, len(words)  # lo words are known to fit with the ellipsis
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid]) + " ...") <= limit:
            lo = mid
        else:
            hi = mid - 1
    if lo:
        return " ".join(words[:lo]) + " ..."
    first = words[0]  # one very long "word": cut by characters
    lo, hi = 0, len(first)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(first[:mid] + "...") <= limit:
            lo = mid
        else:
            hi = mid - 1
    return first[:lo] + "..." if lo else ""


class TriadJudge:
    """Judges (question, context, answer) triples with the local LLM; thread-safe via the engine.

    Every prompt is fitted to the per-request context (`context_tokens`, and the engine's own
    `n_ctx_per_seq` when it has one): prompt + `max_tokens` of reply never exceed it. Passages are cut
    first, then an overlong answer (it is quoted three times); a question that leaves no room raises
    JudgePromptTooLong instead of reaching the engine.
    """

    def __init__(self, generator: Generator, *, max_context_tokens: int = 900, max_tokens: int = 120,
                 context_tokens: int | None = None) -> None:
        self.generator = generator
        self.max_context_tokens = max_context_tokens
        self.max_tokens = max_tokens
        self.context_tokens = context_tokens

    @property
    def model_id(self) -> str:
        return self.generator.model_id

    def window(self) -> int | None:
        """Tokens one request may hold (prompt + reply), or None when nothing says."""
        self.generator.count_tokens("")  # loads the engine, whose per-request size is final only then
        known = [w for w in (self.context_tokens, getattr(self.generator, "n_ctx_per_seq", None))
                 if isinstance(w, int) and w > 0]
        return min(known) if known else None

    def _cost(self, messages: list[dict[str, str]]) -> int:
        """Prompt tokens of `messages`, counted on the rendered chat template when the generator has one
        (its special markup counted as plain text, so the figure errs on the high side)."""
        render = getattr(self.generator, "format_chat", None)
        if callable(render):
            return self.generator.count_tokens(render(messages))
        return sum(self.generator.count_tokens(m["content"]) + 4 for m in messages) + TEMPLATE_MARGIN

    def _fit(self, passages: Sequence[str], budget: int) -> str:
        out: list[str] = []
        used = 0
        count = self.generator.count_tokens
        for n, p in enumerate(passages, start=1):
            block = f"[{n}] {' '.join(p.split())}"
            cost = count(block) + 2  # the blank line between passages
            if used + cost > budget:
                if not out:  # one long passage: keep its start
                    out.append(truncate_tokens(count, block, budget - 2))
                break
            out.append(block)
            used += cost
        return "\n\n".join(b for b in out if b) or "(no passages)"

    def messages(self, question: str, passages: Sequence[str], answer: str) -> list[dict[str, str]]:
        """The judge's chat messages, fitted to the per-request context."""
        answer = " ".join(answer.split())

        def build(context: str, ans: str) -> list[dict[str, str]]:
            prompt = JUDGE_PROMPT.format(context=context, question=question, answer=ans)
            return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]

        window = self.window()
        if window is None:
            return build(self._fit(passages, self.max_context_tokens), answer)
        budget = window - self.max_tokens
        room = budget - self._cost(build("", ""))  # what the passages and the answer's three quotes share
        if room < MIN_CONTEXT_TOKENS + 16:
            raise JudgePromptTooLong(f"the judge's prompt without passages already takes {budget - room} of the "
                                     f"{budget} prompt tokens a request may hold ({window} - {self.max_tokens} "
                                     f"for the reply)")
        # the answer is quoted three times: whole when the passages keep their full share, else cut to at
        # most half the room
        limit = max(8, room // 6, (room - self.max_context_tokens) // 3)
        answer = truncate_tokens(self.generator.count_tokens, answer, limit)
        context_budget = min(self.max_context_tokens, budget - self._cost(build("", answer)))
        messages = build(self._fit(passages, context_budget), answer)
        over = self._cost(messages) - budget
        while over > 0 and context_budget > MIN_CONTEXT_TOKENS:  # joining passages cost a few tokens more
            context_budget = max(MIN_CONTEXT_TOKENS, context_budget - over - 8)
            messages = build(self._fit(passages, context_budget), answer)
            over = self._cost(messages) - budget
        if over > 0:
            raise JudgePromptTooLong(f"the judge's prompt takes {over + budget} tokens, more than the {budget} a "
                                     f"request may hold besides its {self.max_tokens}-token reply")
        return messages

    def judge(self, question: str, passages: Sequence[str], answer: str) -> Verdict:
        messages = self.messages(question, passages, answer)
        completion = self.generator.generate(messages, SamplingParams(max_tokens=self.max_tokens, temperature=0.0))
        return parse_verdict(completion.text)


# -- calibration ------------------------------------------------------------------------------------

def calibration_cases(squad_dir: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """3n labelled cases from n answerable SQuAD questions (see the module docstring)."""
    passages = {}
    with (squad_dir / "passages.jsonl").open(encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            passages[p["_id"]] = p
    with (squad_dir / "qa.jsonl").open(encoding="utf-8") as f:
        qa = [q for q in map(json.loads, f) if not q.get("is_impossible") and q.get("answers")]
    rng = random.Random(seed)
    chosen = rng.sample(qa, min(n, len(qa)))
    cases = []
    def title(q: dict[str, Any]) -> str:
        return passages[q["gold_passage_ids"][0]]["title"]

    for q in chosen:
        gold = passages[q["gold_passage_ids"][0]]
        others = [o for o in qa if title(o) != title(q)]
        if not others:
            raise ValueError(f"{squad_dir}: calibration needs questions from at least two articles")
        other = rng.choice(others)
        other_passage = passages[other["gold_passage_ids"][0]]
        ref, wrong = q["answers"][0], other["answers"][0]
        cases += [
            {"question": q["question"], "context": gold["text"], "answer": ref, "faithful": True, "relevant": True},
            {"question": q["question"], "context": gold["text"], "answer": wrong, "faithful": False,
             "relevant": True},
            {"question": q["question"], "context": other_passage["text"], "answer": ref, "faithful": False,
             "relevant": False},
        ]
    return cases


def calibrate(judge: TriadJudge, squad_dir: Path, cache_dir: Path, *, n: int = 16, seed: int = 0,
              concurrency: int = 4, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Agreement of the judge's verdicts (score >= 0.5) with the known labels; cached per judge and rubric."""
    key = hashlib.sha256(f"{judge.model_id}|{RUBRIC_VERSION}|{JUDGE_PROMPT}|{squad_dir.name}|{n}|{seed}"
                         .encode()).hexdigest()[:16]
    cache = cache_dir / f"judge-calibration-{key}.json"
    if cache.is_file():
        result = json.loads(cache.read_text(encoding="utf-8"))
        result["cached"] = True
        return result
    cases = calibration_cases(squad_dir, n, seed)
    done = 0

    def run(case: dict[str, Any]) -> Verdict | None:
        nonlocal done
        try:
            v = judge.judge(case["question"], [case["context"]], case["answer"])
        except Exception as e:  # one case that fails is counted, the others still calibrate
            logger.warning("a calibration case failed: %s: %s", type(e).__name__, e)
            v = None
        done += 1
        if progress:
            progress(done, len(cases))
        return v

    with ThreadPoolExecutor(concurrency) as pool:
        verdicts = list(pool.map(run, cases))
    result = {"judge": judge.model_id, "rubric": RUBRIC_VERSION, "set": squad_dir.name,
                              "cases": len(cases), "questions": n, "seed": seed}
    for crit, label in (("faithfulness", "faithful"), ("context_relevance", "relevant")):
        pairs = [(getattr(v, crit) >= 0.5, c[label]) for v, c in zip(verdicts, cases, strict=True)
                 if v is not None and getattr(v, crit) is not None]
        result[crit] = {
            "agreement": round(sum(a == b for a, b in pairs) / len(pairs), 3) if pairs else None,
            "kappa": None if not pairs else round(cohen_kappa([a for a, _ in pairs], [b for _, b in pairs]) or 0, 3),
            "parsed": len(pairs),
        }
    result["unparsed"] = sum(v is not None and v.faithfulness is None for v in verdicts)
    result["failed"] = sum(v is None for v in verdicts)
    if not result["failed"]:  # a calibration with failed cases is tried again next time
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(result, indent=1), encoding="utf-8")
    result["cached"] = False
    return result
