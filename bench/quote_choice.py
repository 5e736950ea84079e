"""Which sentence to quote when the model's draft is only a citation ("[2]"): four ways, on the same questions.

    python bench/quote_choice.py [--sets xquad-es,xquad-en,golden-ca,golden-es] [--per-set 40]
                                 [--out docs/benchmarks/results/quote-choice.json] [--resume]

For each answerable question whose retrieved passages (the product's retriever, top-k above min_score) hold a
reference answer, the candidates are the passages' six quotable sentences closest to the question in meaning
(the index's e5 encoder), and each way picks one:
  top_passage  the top passage's closest sentence (the quote before this benchmark);
  closest      the closest sentence over all passages;
  mcq          the bundled model asked which numbered sentence states the answer (next-token scores of "1".."6");
  upr          query likelihood: the sentence after which the model most likely asks the question (mean log-prob
               of the question's tokens after "Passage: ...\\nWrite a question about this passage.").
Scored: the chosen sentence contains a reference answer; `any_cand`: one of the six does (the ceiling).
The way is chosen on XQuAD's train and dev articles (the verifier's split, bench/qa_sets.py); the golden sets
are reported, never chosen on. Rows go to <out>.rows.jsonl as they finish; --resume reuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.container import Services  # noqa: E402
from app.prompts import QUESTION_LIKELIHOOD  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.qa_sets import Question, data_dir, questions, resumed_rows  # noqa: E402
from eval import metrics as M  # noqa: E402
from retrieval.compressor import split_sentences  # noqa: E402

CANDIDATES = 6
WAYS = ("top_passage", "closest", "mcq", "upr", "any_cand")
MCQ_SYSTEM = {"en": "Answer with the number of the sentence only.", "es": "Responde solo con el número de la frase.",
              "ca": "Respon només amb el número de la frase."}
MCQ_USER = {"en": "Sentences:\n{s}\n\nQuestion: {q}\nWhich sentence states the answer to the question?",
            "es": "Frases:\n{s}\n\nPregunta: {q}\n¿Qué frase dice la respuesta a la pregunta?",
            "ca": "Frases:\n{s}\n\nPregunta: {q}\nQuina frase diu la resposta a la pregunta?"}


def chosen_questions(data: Path, name: str, per_set: int) -> list[Question]:
    qs = [q for q in questions(data, name) if q.answerable]
    if name.startswith("golden-"):
        return qs
    pool = [q for q in qs if q.split in ("train", "dev")]
    random.Random(7).shuffle(pool)
    return pool[:per_set]


def row_for(services: Services, q: Question) -> dict[str, Any] | None:
    s = services
    k, min_score = s.settings.retrieval.k, s.settings.retrieval.effective_min_score()
    hits = [h for h in s.retriever.retrieve(q.question, k, None, language=q.language) if h.relevance >= min_score]
    if not any(M.contains_answer(h.chunk.text, q.answers) for h in hits):
        return None  # nothing to choose: the passages do not hold the answer
    spans = [(rank, " ".join(h.chunk.text[a:b].split())) for rank, h in enumerate(hits)
             for a, b in split_sentences(h.chunk.text)]
    spans = [(r, t) for r, t in spans if len(t) >= 20 and len(t.split()) >= 5 and not t.startswith("#")]
    if not spans:
        return None
    unique = list(dict.fromkeys(t for _, t in spans))
    cos = np.asarray(s.embedder.embed_documents(unique)) @ np.asarray(s.embedder.embed_query(q.question))
    top_passage = max((i for i, t in enumerate(unique) if (0, t) in spans), key=lambda i: cos[i])
    candidates = [unique[i] for i in np.argsort(-cos)[:CANDIDATES]]
    gen = s.generator
    t0 = time.perf_counter()
    listing = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(candidates))
    prompt = gen.format_chat([{"role": "system", "content": MCQ_SYSTEM[q.language]},
                              {"role": "user", "content": MCQ_USER[q.language].format(s=listing, q=q.question)}])
    lp = gen.next_token_logprobs([prompt], [str(i + 1) for i in range(len(candidates))])[0]
    mcq = candidates[int(max(lp, key=lambda c: lp[c])) - 1]
    t_mcq = time.perf_counter() - t0
    t0 = time.perf_counter()
    prompts = [gen.format_chat([{"role": "user", "content": QUESTION_LIKELIHOOD.format(passage=c)}])
               for c in candidates]
    scores = gen.continuation_logprobs(prompts, [q.question] * len(candidates))
    upr = candidates[int(np.argmax([np.mean(x) for x in scores]))]
    t_upr = time.perf_counter() - t0
    holds = lambda text: bool(M.contains_answer(text, q.answers))  # noqa: E731
    return {"id": q.id, "lang": q.language, "top_passage": holds(unique[top_passage]), "closest": holds(candidates[0]),
            "any_cand": any(holds(c) for c in candidates), "mcq": holds(mcq), "upr": holds(upr),
            "t_mcq": round(t_mcq, 2), "t_upr": round(t_upr, 2)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    return {"n": n, **{way: round(sum(r[way] for r in rows) / n, 3) if n else None for way in WAYS},
            "mcq_s": round(sum(r["t_mcq"] for r in rows) / n, 1) if n else None,
            "upr_s": round(sum(r["t_upr"] for r in rows) / n, 1) if n else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/consulta-bench"))
    ap.add_argument("--sets", default="xquad-es,xquad-en,golden-ca,golden-es")
    ap.add_argument("--per-set", type=int, default=40, help="questions per QA set (train and dev articles)")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/results/quote-choice.json"))
    ap.add_argument("--resume", action="store_true", help="reuse the rows of an earlier run")
    args = ap.parse_args()
    rows_file = args.out.with_suffix(".rows.jsonl")
    done = {(r["set"], r["id"]): r for r in resumed_rows(rows_file, args.resume)}
    t0 = time.perf_counter()
    rows = list(done.values())
    with rows_file.open("a", encoding="utf-8") as sink:
        for name in args.sets.split(","):
            services = Services(Settings(data_dir=data_dir(args.data, name, args.work)))
            for q in chosen_questions(args.data, name, args.per_set):
                if (name, q.id) in done:
                    continue
                try:
                    row = row_for(services, q)
                except Exception as e:  # noqa: BLE001 - one bad question must not lose the run
                    print(f"[{name}] {q.id} failed: {type(e).__name__}: {e}", file=sys.stderr)
                    continue
                if row is None:
                    continue
                row["set"] = name
                rows.append(row)
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                print(json.dumps(row), file=sys.stderr)
            services.close()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"command": "python " + " ".join(sys.argv), "commit": commit, "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "seconds": round(time.perf_counter() - t0),
              "candidates": CANDIDATES, "model": Settings().serving.model,
              "results": {name: summarise([r for r in rows if r["set"] == name]) for name in args.sets.split(",")}}
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
