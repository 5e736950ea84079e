"""Evaluation runs: index a dataset's documents with the app's own pipeline, put every question through the
real retriever and assistant (concurrently, so the engine batches them), judge, and score.

Indexes are cached under `<data_dir>/eval/indexes/<key>` (key: the documents and the settings that shape
the index), so a second run, or a second config with the same embedder and chunker, does not re-embed.

A question that fails (an exception while retrieving, answering, in the noise pass or while judging) becomes
a row with `error` and `failed_stage`; the run goes on, and the metrics are computed over the other rows.
With a Checkpoint, each row is written as each stage of it finishes, and rows already there are reused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from app.assistant import Assistant
from app.container import Services
from app.errors import ConsultaError
from app.models import resolve_model
from app.settings import Settings
from eval import metrics as M
from eval.checkpoint import Checkpoint
from eval.datasets import Dataset, EvalItem
from retrieval.types import Chunk, Hit, SearchFilter

logger = logging.getLogger(__name__)

COLLECTION = "eval"
Progress = Callable[[str, int, int | None], None]  # (phase, done, total)


@dataclass(slots=True)
class RunConfig:
    """A named variant of the settings; several are compared on the same questions."""

    name: str
    settings: Settings
    file: str | None = None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_configs(files: Sequence[str | Path], base: Settings) -> list[RunConfig]:
    """One RunConfig per YAML file (the app's settings format), each laid over `base`; none -> base alone."""
    if not files:
        return [RunConfig("default", base)]
    configs, names = [], set()
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConsultaError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConsultaError(f"{path}: a config file holds settings sections (retrieval:, serving:, ...)")
        name = path.stem
        while name in names:
            name += "'"
        names.add(name)
        configs.append(RunConfig(name, Settings(**_merge(base.model_dump(), data)), str(path)))
    return configs


def _unit_folder(unit: str) -> str:
    return hashlib.sha1(unit.encode()).hexdigest()[:12]


def _passage_file_name(title: str) -> str:
    """A passage is written as a file named after its title, as people name documents (the name is indexed
    with every chunk: the context line); an untitled one is "passage.txt"."""
    safe = re.sub(r"[^\w.-]+", "_", title).strip("._")[:60]
    return f"{safe or 'passage'}.txt"


class EvalIndex:
    """The dataset's documents indexed with one config's ingest and retrieval settings."""

    def __init__(self, dataset: Dataset, settings: Settings, root: Path) -> None:
        self.dataset = dataset
        self._by_folder: dict[str, str] = {}
        if dataset.passages is not None:
            ids = sorted(dataset.passages)
            # "v2": one folder per passage, the file named after its title (an older layout is not reused)
            docs_key = hashlib.sha256("\n".join(ids).encode() + str(dataset.path).encode() + b"v2").hexdigest()[:12]
            self.paths: list[Path] = [root / "docs" / f"{dataset.name.replace('/', '-')}-{docs_key}"]
            self._by_folder = {_unit_folder(u): u for u in ids}
        else:
            self.paths = list(dataset.files)
        ident = json.dumps([sorted(map(str, self.paths)), settings.ingest.model_dump(mode="json"),
                            settings.retrieval.embedder, str(settings.retrieval.embedder_path),
                            sorted(self._by_folder) if self._by_folder else None], sort_keys=True)
        self.key = hashlib.sha256(ident.encode()).hexdigest()[:16]
        self.dir = root / "indexes" / self.key

    def write_documents(self) -> None:
        if self.dataset.passages is None:
            return
        folder = self.paths[0]
        if (folder / ".complete").exists():
            return
        folder.mkdir(parents=True, exist_ok=True)
        for unit, (title, text) in self.dataset.passages.items():
            body = f"{title}\n\n{text}" if title else text
            unit_dir = folder / _unit_folder(unit)
            unit_dir.mkdir(exist_ok=True)
            (unit_dir / _passage_file_name(title)).write_text(body, encoding="utf-8")
        (folder / ".complete").write_text("", encoding="utf-8")

    def unit_of(self, chunk: Chunk) -> str:
        src = Path(chunk.source)
        match self.dataset.unit:
            case "passage":
                return self._by_folder.get(src.parent.name, src.stem)
            case "page":
                return f"{src.stem}#p{chunk.page}"
        return src.name


@dataclass(slots=True)
class ConfigResult:
    config: RunConfig
    rows: list[dict[str, Any]]
    metrics: dict[str, float]
    wall_s: float  # answering (or retrieving) the questions asked in this run
    index: dict[str, Any] = field(default_factory=dict)
    asked: int = 0  # questions asked in this run; the rest were taken from the checkpoint


class DistractorRetriever:
    """Adds `n` random passages of other documents to every retrieval, to measure noise robustness."""

    def __init__(self, inner: Any, pool: Sequence[Chunk], n: int, unit_of: Callable[[Chunk], str],
                 avoid: dict[str, set[str]], seed: int) -> None:
        self.inner, self.pool, self.n, self.unit_of, self.avoid, self.seed = inner, pool, n, unit_of, avoid, seed

    def __getattr__(self, name: str) -> Any:  # the embedder etc. of the real retriever
        return getattr(self.inner, name)

    def retrieve(self, query: str, k: int = 5, filter: SearchFilter | None = None, *,
                 language: str | None = None) -> list[Hit]:
        hits = list(self.inner.retrieve(query, k, filter, language=language))
        rng = random.Random(f"{self.seed}|{query}")
        avoid = self.avoid.get(query, set()) | {self.unit_of(h.chunk) for h in hits}
        candidates = [c for c in rng.sample(list(self.pool), min(len(self.pool), 8 * self.n + 8))
                      if self.unit_of(c) not in avoid]
        floor = min((h.relevance for h in hits), default=1.0)
        for c in candidates[: self.n]:  # at random places, with a score that passes the refusal threshold
            hits.insert(rng.randint(0, len(hits)), Hit(c, floor, dense_score=max(floor, 1.0)))
        return hits


def failed(row: dict[str, Any]) -> bool:
    """Whether the question failed (an exception, not a wrong answer): such a row is left out of the metrics."""
    return "error" in row


class EvalRunner:
    def __init__(self, base: Settings, *, k: int = 10, concurrency: int | None = None, noise: int = 0,
                 seed: int = 0, progress: Progress | None = None, checkpoint: Checkpoint | None = None) -> None:
        self.base = base
        self.k = k
        self.concurrency = concurrency
        self.noise = noise
        self.seed = seed
        self.progress = progress or (lambda phase, done, total: None)
        self.root = base.data_dir / "eval"
        self.checkpoint = checkpoint

    def _save(self, row: dict[str, Any], stage: str) -> None:
        if self.checkpoint is not None:
            self.checkpoint.write(row, stage)

    @staticmethod
    def _fail(row: dict[str, Any], stage: str, error: BaseException) -> None:
        row["error"] = f"{type(error).__name__}: {error}"[:1000]
        row["failed_stage"] = stage
        logger.warning("question %s failed while %s: %s", row["id"], stage, row["error"])
        logger.debug("question %s failed", row["id"], exc_info=error)

    # -- per config -----------------------------------------------------------------------------------

    def eval_settings(self, config: RunConfig, data_dir: Path, generative: bool) -> Settings:
        s = config.settings
        update: dict[str, Any] = {"data_dir": data_dir}
        if generative and s.serving.backend == "local":
            model = resolve_model(s.serving.model, s.models_dir)
            update["serving"] = s.serving.model_copy(update={"model": str(model)})
        return s.model_copy(update=update)

    def build_index(self, dataset: Dataset, config: RunConfig) -> tuple[EvalIndex, Services, dict[str, Any]]:
        index = EvalIndex(dataset, config.settings, self.root)
        index.write_documents()
        services = Services(self.eval_settings(config, index.dir, dataset.generative))
        t = time.perf_counter()
        report = services.pipeline.ingest(index.paths, COLLECTION,
                                          progress=lambda name, d, n: self.progress(f"{config.name}: indexing",
                                                                                    d, n))
        info = {"key": index.key, "dir": str(index.dir), "chunks": report.total_chunks,
                "ingested": sum(f.status == "ingested" for f in report.files),
                "failed": [f.error for f in report.failed], "seconds": round(time.perf_counter() - t, 1)}
        if report.failed:
            logger.warning("%d documents failed to ingest: %s", len(report.failed), report.failed[0].error)
        return index, services, info

    def run_config(self, dataset: Dataset, config: RunConfig) -> ConfigResult:
        saved = self.checkpoint.rows(config.name) if self.checkpoint else {}
        rows_by_id = {i.id: saved[i.id] for i in dataset.items if i.id in saved and not failed(saved[i.id])}
        todo = [i for i in dataset.items if i.id not in rows_by_id]  # failed ones are asked again
        if self.checkpoint is not None:
            self.checkpoint.reused += len(rows_by_id)

        def noise_todo() -> list[dict[str, Any]]:
            return [r for r in rows_by_id.values() if self.noise and dataset.generative and r.get("scores")
                    and "noise" not in r and not failed(r)]

        if not todo and not noise_todo():
            index = EvalIndex(dataset, config.settings, self.root)
            info = {"key": index.key, "dir": str(index.dir), "from_checkpoint": True}
            return ConfigResult(config, [rows_by_id[i.id] for i in dataset.items], {}, 0.0, info, asked=0)
        index, services, info = self.build_index(dataset, config)
        retriever = services.retriever
        retriever.warm_up()
        assistant = services.assistant if dataset.generative else None
        workers = self.concurrency or config.settings.serving.max_sequences
        done = len(rows_by_id)
        phase = f"{config.name}: {'answering' if dataset.generative else 'retrieving'}"
        self.progress(phase, done, len(dataset.items))

        def ask(item: EvalItem) -> None:
            nonlocal done
            row = self._ask(item, config.name, retriever, assistant, index, services)
            rows_by_id[item.id] = row
            self._save(row, "answered")
            done += 1
            self.progress(phase, done, len(dataset.items))

        t0 = time.perf_counter()
        try:
            with ThreadPoolExecutor(workers if dataset.generative else 1) as pool:
                list(pool.map(ask, todo))
            wall = time.perf_counter() - t0
            if self.noise and dataset.generative:
                self._noise_pass(dataset, noise_todo(), services, index, workers)
        finally:
            services.close()
        return ConfigResult(config, [rows_by_id[i.id] for i in dataset.items], {}, wall, info, asked=len(todo))

    def _ask(self, item: EvalItem, config: str, retriever: Any, assistant: Assistant | None, index: EvalIndex,
             services: Services) -> dict[str, Any]:
        """The question's row: retrieved, answered, scored; or, when something raised, marked failed."""
        row: dict[str, Any] = {
            "id": item.id, "question": item.question, "answers": item.answers, "impossible": item.impossible,
            "relevant": item.relevant, "evidence_pages": item.evidence_pages, "config": config,
        }
        stage = "retrieving"
        try:
            self._retrieve(row, item, retriever, index, services, generative=assistant is not None)
            if assistant is not None:
                stage = "answering"
                self._answer(row, item, assistant, index)
                stage = "scoring"
                self._similarity(row, services)
        except Exception as e:  # noqa: BLE001 - one question's failure is reported, the run goes on
            self._fail(row, stage, e)
        return row

    def _retrieve(self, row: dict[str, Any], item: EvalItem, retriever: Any, index: EvalIndex,
                  services: Services, *, generative: bool) -> None:
        t = time.perf_counter()
        hits = retriever.retrieve(item.question, max(self.k * 3, 30))
        retrieval_ms = (time.perf_counter() - t) * 1000
        ranked = M.dedupe([index.unit_of(h.chunk) for h in hits])[: self.k]
        first: dict[str, Any] = {}
        for h in hits:
            first.setdefault(index.unit_of(h.chunk), h)
        row.update({
            "ranked": ranked,
            "retrieved": [{"unit": u, "source": Path(first[u].chunk.source).name, "page": first[u].chunk.page,
                           "label": u if index.dataset.unit != "file" else _label(first[u].chunk),
                           "score": round(float(first[u].score), 4), "relevant": item.relevant.get(u, 0) > 0}
                          for u in ranked[:5]],
            "timings": {"retrieval_ms": retrieval_ms},
        })
        if item.relevant and not item.impossible:
            row["retrieval"] = self.retrieval_scores(ranked, item.relevant)
            if not generative:
                k = services.settings.retrieval.k
                row["retrieval"]["context_precision"] = M.context_precision(ranked[:k], item.relevant)

    def _answer(self, row: dict[str, Any], item: EvalItem, assistant: Assistant, index: EvalIndex) -> None:
        a = assistant.answer(item.question)
        row.update({
            "answer": a.text, "refused": a.refused, "language": a.language,
            "context": [s.text for s in a.sources],
            "context_units": [index.unit_of(_chunk_of(s)) for s in a.sources],
            "cited": [{"unit": index.unit_of(_chunk_of(c)), "source": Path(c.source).name, "page": c.page,
                       "label": index.unit_of(_chunk_of(c)) if index.dataset.unit == "passage" else
                       _label(_chunk_of(c))}
                      for c in a.citations],
            "timings": {"retrieval_ms": a.timings.get("retrieval_ms"), "ttft_ms": a.timings.get("ttft_ms"),
                        "total_ms": a.timings.get("total_ms")},
            "tokens": {"prompt": a.usage.get("prompt_tokens"), "completion": a.usage.get("completion_tokens")},
        })
        if item.relevant and not item.impossible:
            row["retrieval"]["context_precision"] = M.context_precision(row["context_units"], item.relevant)
        row["scores"] = self.answer_scores(item, a.text, a.refused)
        if not a.refused and (item.evidence_pages or item.relevant):
            pages = {(Path(c["source"]).stem, c["page"]) for c in row["cited"]}
            row["citation"] = {}
            if item.evidence_pages:
                row["citation"]["page"] = float(bool(pages & {(d, p) for d, p in item.evidence_pages}))
            if item.relevant and index.dataset.unit != "page":
                row["citation"]["source"] = float(any(c["unit"] in item.relevant for c in row["cited"]))
            elif item.evidence_pages:
                docs = {d for d, _ in item.evidence_pages}
                row["citation"]["source"] = float(any(Path(c["source"]).stem in docs for c in row["cited"]))

    def retrieval_scores(self, ranked: list[str], relevant: dict[str, float]) -> dict[str, float]:
        k = self.k
        return {f"hit@{k}": M.hit_at_k(ranked, relevant, k), f"mrr@{k}": M.mrr_at_k(ranked, relevant, k),
                f"ndcg@{k}": M.ndcg_at_k(ranked, relevant, k), f"recall@{k}": M.recall_at_k(ranked, relevant, k)}

    @staticmethod
    def answer_scores(item: EvalItem, text: str, refused: bool) -> dict[str, float | None]:
        if item.impossible or not item.answers:
            return {}
        numeric = M.numeric_match(text, item.answers)
        if refused:
            return {"em": 0.0, "f1": 0.0, "contains": 0.0, "rouge_l": 0.0, "bleu": 0.0,
                    "numeric": None if numeric is None else 0.0}
        return {"em": M.exact_match(text, item.answers), "f1": M.token_f1(text, item.answers),
                "contains": M.contains_answer(text, item.answers), "rouge_l": M.rouge_l(text, item.answers),
                "bleu": M.bleu(text, item.answers), "numeric": numeric}

    @staticmethod
    def _similarity(row: dict[str, Any], services: Services) -> None:
        if not (row.get("scores") and row["answers"]):
            return
        if row["refused"]:
            row["scores"]["semantic_similarity"] = 0.0
            return
        v = np.asarray(services.embedder.embed_documents([row["answer"], *row["answers"]]))
        row["scores"]["semantic_similarity"] = float(max(v[1:] @ v[0]))

    def _noise_pass(self, dataset: Dataset, todo: list[dict[str, Any]], services: Services, index: EvalIndex,
                    workers: int) -> None:
        """Answers the scored rows again with distractors mixed in (the row's "noise")."""
        try:
            pool = list(services.store.load().chunks())
            avoid = {i.question: set(i.relevant) for i in dataset.items}
            noisy = copy.copy(services.assistant)  # the same pipeline, over a retriever that adds distractors
            noisy.retriever = DistractorRetriever(  # type: ignore[assignment]  # wraps the Retriever, duck-typed
                services.retriever, pool, self.noise, index.unit_of, avoid, self.seed)
        except Exception as e:  # noqa: BLE001 - every row waiting for the pass fails with it, the run goes on
            for row in todo:
                self._fail(row, "adding distractors", e)
                self._save(row, "noise")
            return
        items = {i.id: i for i in dataset.items}
        done = 0

        def ask(row: dict[str, Any]) -> None:
            nonlocal done
            try:
                a = noisy.answer(row["question"])
                row["noise"] = {"answer": a.text, "refused": a.refused,
                                "f1": self.answer_scores(items[row["id"]], a.text, a.refused).get("f1", 0.0)}
            except Exception as e:  # noqa: BLE001
                self._fail(row, "answering with distractors", e)
            self._save(row, "noise")
            done += 1
            self.progress("noise: answering with distractors", done, len(todo))

        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(ask, todo))

    # -- judge -----------------------------------------------------------------------------------------

    def judge_rows(self, rows: list[dict[str, Any]], judge: Any, workers: int) -> None:
        """Judges the answered rows not judged yet (a row from the checkpoint keeps its verdict)."""
        todo = [r for r in rows if r.get("answer") is not None and not r.get("refused") and "judge" not in r
                and not failed(r)]
        done = 0

        def run(row: dict[str, Any]) -> None:
            nonlocal done
            try:
                row["judge"] = judge.judge(row["question"], row["context"], row["answer"]).to_dict()
            except Exception as e:  # noqa: BLE001
                self._fail(row, "judging", e)
            self._save(row, "judged")
            done += 1
            self.progress("judging", done, len(todo))

        self.progress("judging", 0, len(todo))
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(run, todo))


def _label(chunk: Chunk) -> str:
    return Path(chunk.source).name + (f" p.{chunk.page}" if chunk.page else "")


def _chunk_of(c: Any) -> Chunk:
    """A Citation back as the minimal Chunk that unit_of needs."""
    return Chunk(c.chunk_id, "", "", c.start, c.end, {"source": c.source, "page": c.page})


def aggregate(rows: list[dict[str, Any]], dataset: Dataset, k: int, wall_s: float,
              asked: int | None = None) -> dict[str, float]:
    """The run's metrics from its rows that did not fail; a metric the dataset cannot support is left out.

    Throughput is over the `asked` questions (default: all rows) answered in `wall_s`.
    """
    asked = len(rows) if asked is None else asked
    rows = [r for r in rows if not failed(r)]
    out: dict[str, float | None] = {}
    ret = [r["retrieval"] for r in rows if "retrieval" in r]
    if ret:
        for name in (f"hit@{k}", f"mrr@{k}", f"ndcg@{k}", f"recall@{k}", "context_precision"):
            out[f"retrieval.{name}"] = M.mean([x.get(name) for x in ret])
    if dataset.generative:
        scored = [r["scores"] for r in rows if r.get("scores")]
        for name in ("em", "f1", "contains", "numeric", "rouge_l", "bleu", "semantic_similarity"):
            if scored:
                out[f"answer.{name}"] = M.mean([s.get(name) for s in scored])
        unans = [r for r in rows if r["impossible"]]
        ans = [r for r in rows if not r["impossible"]]
        if unans:
            out["refusal.unanswerable_rate"] = M.mean([float(r["refused"]) for r in unans])
        if ans:
            out["refusal.false_rate"] = M.mean([float(r["refused"]) for r in ans])
        cit = [r["citation"] for r in rows if r.get("citation")]
        if any("page" in c for c in cit):
            out["citation.page_accuracy"] = M.mean([c.get("page") for c in cit])
        if any("source" in c for c in cit):
            out["citation.source_accuracy"] = M.mean([c.get("source") for c in cit])
        judged = [r["judge"] for r in rows if r.get("judge")]
        for crit in ("faithfulness", "answer_relevance", "context_relevance"):
            vals = [j.get(crit) for j in judged]
            if any(v is not None for v in vals):
                out[crit] = M.mean(vals)
        noisy = [r for r in rows if r.get("noise")]
        if noisy:
            out["noise.f1"] = M.mean([r["noise"]["f1"] for r in noisy])
            out["noise.f1_drop"] = M.mean([r["scores"]["f1"] - r["noise"]["f1"] for r in noisy])
        ttft = [r["timings"].get("ttft_ms") for r in rows]
        out["latency.ttft_ms_p50"] = M.percentile(ttft, 0.5)
        out["latency.total_ms_p50"] = M.percentile([r["timings"].get("total_ms") for r in rows], 0.5)
        out["latency.total_ms_p95"] = M.percentile([r["timings"].get("total_ms") for r in rows], 0.95)
        answered = [r for r in rows if r.get("tokens", {}).get("prompt")]
        if answered:
            out["tokens.prompt_mean"] = M.mean([r["tokens"]["prompt"] for r in answered])
            out["tokens.completion_mean"] = M.mean([r["tokens"]["completion"] for r in answered])
        if wall_s > 0 and asked:
            out["throughput.questions_per_min"] = asked / wall_s * 60
    out["latency.retrieval_ms_p50"] = M.percentile([r["timings"].get("retrieval_ms") for r in rows], 0.5)
    return {key: round(v, 4) for key, v in out.items() if v is not None}


def is_failure(row: dict[str, Any]) -> bool:
    """What the report's "failures only" filter shows: a question that failed, a wrong refusal, a wrong answer,
    or a retrieval miss."""
    if failed(row):
        return True
    if "answer" not in row:
        hits = [v for k, v in row.get("retrieval", {}).items() if k.startswith("hit@")]
        return bool(hits) and hits[0] == 0
    if row["impossible"]:
        return not row["refused"]
    if row["refused"]:
        return True
    s = row.get("scores", {})
    if s and s.get("f1", 1) < 0.5 and not s.get("contains") and not s.get("numeric"):
        return True
    return bool(row.get("citation", {}).get("page") == 0.0)
