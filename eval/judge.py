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


class TriadJudge:
    """Judges (question, context, answer) triples with the local LLM; thread-safe via the engine."""

    def __init__(self, generator: Generator, *, max_context_tokens: int = 900, max_tokens: int = 120) -> None:
        self.generator = generator
        self.max_context_tokens = max_context_tokens
        self.max_tokens = max_tokens

    @property
    def model_id(self) -> str:
        return self.generator.model_id

    def _fit(self, passages: Sequence[str]) -> str:
        out, used = [], 0
        for n, p in enumerate(passages, start=1):
            block = f"[{n}] {' '.join(p.split())}"
            cost = self.generator.count_tokens(block)
            if out and used + cost > self.max_context_tokens:
                break
            if cost > self.max_context_tokens:  # one long passage: keep its start
                block = block[: self.max_context_tokens * 3]
            out.append(block)
            used += cost
        return "\n\n".join(out) or "(no passages)"

    def judge(self, question: str, passages: Sequence[str], answer: str) -> Verdict:
        answer = " ".join(answer.split())
        prompt = JUDGE_PROMPT.format(context=self._fit(passages), question=question, answer=answer)
        messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]
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

    def run(case: dict[str, Any]) -> Verdict:
        nonlocal done
        v = judge.judge(case["question"], [case["context"]], case["answer"])
        done += 1
        if progress:
            progress(done, len(cases))
        return v

    with ThreadPoolExecutor(concurrency) as pool:
        verdicts = list(pool.map(run, cases))
    result: dict[str, Any] = {"judge": judge.model_id, "rubric": RUBRIC_VERSION, "set": squad_dir.name,
                              "cases": len(cases), "questions": n, "seed": seed}
    for crit, label in (("faithfulness", "faithful"), ("context_relevance", "relevant")):
        pairs = [(getattr(v, crit) >= 0.5, c[label]) for v, c in zip(verdicts, cases, strict=True)
                 if getattr(v, crit) is not None]
        result[crit] = {
            "agreement": round(sum(a == b for a, b in pairs) / len(pairs), 3) if pairs else None,
            "kappa": None if not pairs else round(cohen_kappa([a for a, _ in pairs], [b for _, b in pairs]) or 0, 3),
            "parsed": len(pairs),
        }
    result["unparsed"] = sum(v.faithfulness is None for v in verdicts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=1), encoding="utf-8")
    result["cached"] = False
    return result
