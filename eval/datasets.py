"""Evaluation datasets: the formats we read, detected from the folder, loaded into one shape.

Formats
- beir:         corpus.jsonl (or passages.jsonl) {_id, title, text}, queries.jsonl {_id, text},
                qrels/test.tsv (query-id, corpus-id, score; header). Retrieval only.
- squad:        passages.jsonl + qa.jsonl {id, question, answers[], is_impossible, gold_passage_ids[]}
                (SQuAD 2.0 / XQuAD converted). Passages become the documents.
- financebench: qa.jsonl whose rows carry evidence[{doc_name, page_num_0based}] + pdfs/<doc_name>.pdf.
- golden:       a project's own set: golden.jsonl in the folder (or the .jsonl file itself), one row per question:
                {"id": "q1", "question": "...", "answers": ["..."], "unanswerable": false,
                 "source": "handbook.pdf", "page": 2, "context": "text the question was written from"}
                Only "question" is required; documents come from --documents (default: documents/ beside it).
                `consulta eval generate` writes this format.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ConsultaError


class DatasetError(ConsultaError):
    """The dataset folder is missing or not in a format we read (seen by whoever ran `consulta eval`)."""


@dataclass(slots=True)
class EvalItem:
    """One question with what it is checked against. `relevant` maps document-unit ids to graded gains."""

    id: str
    question: str
    answers: list[str] = field(default_factory=list)
    impossible: bool = False
    relevant: dict[str, float] = field(default_factory=dict)
    evidence_pages: list[tuple[str, int]] = field(default_factory=list)  # (document name, 1-based page)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Dataset:
    """Questions plus the documents to index. Retrieved chunks map to `unit` ids: passage, page or file."""

    name: str
    format: str
    path: Path
    items: list[EvalItem]
    passages: dict[str, tuple[str, str]] | None = None  # unit id -> (title, text), written out as files
    files: list[Path] = field(default_factory=list)  # documents on disk (PDFs, a golden set's documents)
    unit: str = "passage"  # "passage" | "page" | "file"

    @property
    def generative(self) -> bool:
        """Whether questions go to the assistant (they have references), or only to retrieval."""
        return self.format != "beir"

    @property
    def has_unanswerable(self) -> bool:
        return any(i.impossible for i in self.items)


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{path}:{n}: not valid JSON ({e.msg})") from e


def detect_format(path: Path) -> str:
    """The dataset format of a folder (or golden .jsonl file), from the files it holds."""
    if path.is_file():
        if path.suffix == ".jsonl":
            return "golden"
        raise DatasetError(f"{path}: a dataset is a folder, or a golden-set .jsonl file")
    if not path.is_dir():
        raise DatasetError(f"dataset not found: {path}")
    if (path / "qa.jsonl").is_file():
        first = next(_jsonl(path / "qa.jsonl"), {})
        if "evidence" in first or (path / "pdfs").is_dir():
            return "financebench"
        if (path / "passages.jsonl").is_file():
            return "squad"
    if (path / "queries.jsonl").is_file() and (path / "qrels").is_dir() and \
            ((path / "corpus.jsonl").is_file() or (path / "passages.jsonl").is_file()):
        return "beir"
    if (path / "golden.jsonl").is_file():
        return "golden"
    raise DatasetError(f"{path}: not a dataset we read; expected BEIR (corpus.jsonl, queries.jsonl, qrels/), "
                       "SQuAD-style (passages.jsonl, qa.jsonl), FinanceBench (qa.jsonl with evidence, pdfs/) "
                       "or a golden set (golden.jsonl)")


def _sample(items: list[EvalItem], limit: int | None, seed: int) -> list[EvalItem]:
    if limit is None or limit >= len(items):
        return items
    return random.Random(seed).sample(items, limit)


def load_dataset(path: str | Path, *, limit: int | None = None, seed: int = 0,
                 documents: str | Path | None = None) -> Dataset:
    """Load a dataset, keeping a seeded sample of `limit` questions (the same questions for every config)."""
    path = Path(path).resolve()
    fmt = detect_format(path)
    name = path.stem if path.is_file() else "/".join(path.parts[-2:]) if path.parent.name in ("en", "es", "ca") \
        or path.name in ("en", "es", "ca") else path.name
    loader = {"beir": _load_beir, "squad": _load_squad, "financebench": _load_financebench,
              "golden": _load_golden}[fmt]
    ds = loader(path, limit, seed, Path(documents).resolve() if documents else None)
    ds.name = name
    if not ds.items:
        raise DatasetError(f"{path}: no questions to evaluate")
    return ds


def _load_beir(path: Path, limit: int | None, seed: int, documents: Path | None) -> Dataset:
    corpus_file = path / "corpus.jsonl" if (path / "corpus.jsonl").is_file() else path / "passages.jsonl"
    passages = {str(d["_id"]): (d.get("title") or "", d["text"]) for d in _jsonl(corpus_file)}
    qrels_file = next(iter(sorted((path / "qrels").glob("test.tsv")) or sorted((path / "qrels").glob("*.tsv"))),
                      None)
    if qrels_file is None:
        raise DatasetError(f"{path}/qrels: no .tsv file")
    qrels: dict[str, dict[str, float]] = {}
    with qrels_file.open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            if float(row[2]) > 0 and row[1] in passages:
                qrels.setdefault(row[0], {})[row[1]] = float(row[2])
    items = [EvalItem(str(q["_id"]), q["text"], relevant=qrels[str(q["_id"])])
             for q in _jsonl(path / "queries.jsonl") if str(q["_id"]) in qrels]
    return Dataset("", "beir", path, _sample(items, limit, seed), passages=passages)


def _load_squad(path: Path, limit: int | None, seed: int, documents: Path | None) -> Dataset:
    all_passages = {str(d["_id"]): (d.get("title") or "", d["text"]) for d in _jsonl(path / "passages.jsonl")}
    items = [EvalItem(str(q["id"]), q["question"], list(q.get("answers") or []), bool(q.get("is_impossible")),
                      {g: 1.0 for g in q.get("gold_passage_ids", [])},
                      meta={"title": q.get("title"), "plausible_answers": q.get("plausible_answers")})
             for q in _jsonl(path / "qa.jsonl")]
    items = _sample(items, limit, seed)
    # The documents are the whole articles the sampled questions come from: every other passage of the
    # article is a realistic near-miss for retrieval.
    titles = {all_passages[g][0] for i in items for g in i.relevant if g in all_passages}
    passages = {pid: p for pid, p in all_passages.items() if p[0] in titles}
    return Dataset("", "squad", path, items, passages=passages)


def _load_financebench(path: Path, limit: int | None, seed: int, documents: Path | None) -> Dataset:
    pdf_dir = documents or path / "pdfs"
    items = []
    for q in _jsonl(path / "qa.jsonl"):
        if not (pdf_dir / f"{q['doc_name']}.pdf").is_file():
            continue
        pages = [(e["doc_name"], int(e["page_num_0based"]) + 1) for e in q.get("evidence", [])]
        items.append(EvalItem(str(q["id"]), q["question"], list(q.get("answers") or []), False,
                              {f"{d}#p{p}": 1.0 for d, p in pages}, pages,
                              meta={"doc_name": q["doc_name"], "question_type": q.get("question_type")}))
    if not items:
        raise DatasetError(f"{path}: none of the questions has its PDF in {pdf_dir}")
    items = _sample(items, limit, seed)
    files = sorted({pdf_dir / f"{i.meta['doc_name']}.pdf" for i in items})
    return Dataset("", "financebench", path, items, files=files, unit="page")


def _load_golden(path: Path, limit: int | None, seed: int, documents: Path | None) -> Dataset:
    file = path if path.is_file() else path / "golden.jsonl"
    items = []
    for n, q in enumerate(_jsonl(file), start=1):
        if not q.get("question"):
            raise DatasetError(f"{file}:{n}: a golden row needs a \"question\"")
        answers = q.get("answers")
        if answers is None and q.get("answer"):
            answers = [q["answer"]]
        source = Path(q["source"]).name if q.get("source") else None
        page = int(q["page"]) if q.get("page") is not None else None
        items.append(EvalItem(str(q.get("id") or n), q["question"], list(answers or []),
                              bool(q.get("unanswerable") or q.get("is_impossible")),
                              {source: 1.0} if source else {}, [(Path(source).stem, page)] if source and page else [],
                              meta={"context": q.get("context"), "reviewed": q.get("reviewed")}))
    docs = documents or file.parent / "documents"
    if not docs.exists():
        raise DatasetError(f"{file}: the golden set needs its documents: pass --documents DIR "
                           f"(or put them in {docs})")
    files = [docs] if docs.is_dir() else [docs]
    return Dataset("", "golden", path, _sample(items, limit, seed), files=files, unit="file")
