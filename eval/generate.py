"""`consulta eval generate`: a golden set written by the local LLM from a collection's own chunks.

Each row is a question the chunk answers, a short answer, and where it came from, in the golden JSONL
format (eval/datasets.py) with "reviewed": false, so that people check and edit it before trusting it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from app.container import Services
from app.errors import ConsultaError
from eval.metrics import normalize_answer
from retrieval.reranker_training import pick_chunks as spread_sample
from retrieval.types import Chunk
from serving.generator import SamplingParams

GENERATE_SYSTEM = "You write exam questions about documents. You reply with JSON only."
GENERATE_PROMPT = """Write one question that the PASSAGE answers, in the language of the PASSAGE. The question must \
make sense on its own, without seeing the passage. The answer is a short phrase copied word for word from the PASSAGE.

PASSAGE ({title}):
{text}

Reply with one JSON object: {{"question": "...", "answer": "..."}}"""


def parse_pair(text: str) -> tuple[str, str] | None:
    q = re.search(r'"question"\s*:\s*"((?:[^"\\]|\\.)+)"', text)
    a = re.search(r'"answer"\s*:\s*"((?:[^"\\]|\\.)+)"', text)
    if not q or not a:
        return None
    return json.loads(f'"{q.group(1)}"'), json.loads(f'"{a.group(1)}"')


def pick_chunks(chunks: list[Chunk], n: int, seed: int, collection: str | None) -> list[Chunk]:
    """A seeded sample of substantial chunks (40 words or more), spread over documents."""
    picked = spread_sample([c for c in chunks if collection is None or c.collection == collection], n, seed,
                           min_words=40)
    if not picked:
        raise ConsultaError("no chunks to write questions from" + (f" in collection '{collection}'" if collection
                                                                      else "") + " (ingest documents first)")
    return picked


def generate_golden(services: Services, out: Path, *, n: int = 20, seed: int = 0, collection: str | None = None,
                    concurrency: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    store = services.store.load()
    chunks = pick_chunks(list(store.chunks()), n, seed, collection)
    generator = services.generator
    done = 0

    def write_one(c: Chunk) -> dict[str, Any] | None:
        nonlocal done
        prompt = GENERATE_PROMPT.format(title=c.meta.get("title") or Path(c.source).name, text=c.text.strip())
        completion = generator.generate([{"role": "system", "content": GENERATE_SYSTEM},
                                         {"role": "user", "content": prompt}],
                                        SamplingParams(max_tokens=120, temperature=0.0))
        done += 1
        if progress:
            progress(done, len(chunks))
        pair = parse_pair(completion.text)
        if pair is None:
            return None
        question, answer = pair
        return {"id": f"gen-{c.id[:12]}", "question": question, "answers": [answer], "unanswerable": False,
                "source": c.source, "page": c.page, "chunk_id": c.id, "context": c.text,
                "answer_in_source": normalize_answer(answer) in normalize_answer(c.text),
                "collection": c.collection, "reviewed": False}

    with ThreadPoolExecutor(concurrency or services.settings.serving.max_sequences) as pool:
        rows = [r for r in pool.map(write_one, chunks) if r is not None]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return {"written": len(rows), "asked": len(chunks), "unparsed": len(chunks) - len(rows),
            "answer_in_source": sum(r["answer_in_source"] for r in rows), "path": str(out)}
