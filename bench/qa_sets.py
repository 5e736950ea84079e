"""The question sets the answer and verifier benchmarks share: indexes built once with the product's own
ingestion (cached under a work folder), questions with their gold passages or evidence pages, and the split
by article that keeps what is trained or tuned apart from what is reported (STYLE.md §11).

Sets (from ../shared/data, read in place, never copied):
  golden-ca, golden-es  the Catalan and Spanish Debian manuals, questions written for the project (30%
                        unanswerable); never trained or tuned on, reported whole.
  squad2                SQuAD2-half (en, half unanswerable): 16 articles -> 8 train, 3 dev, 5 test.
  xquad-en, xquad-es    XQuAD (the same 48 articles in both languages): 24 train, 8 dev, 16 test.
  xquad-es@en, xquad-en@es
                        XQuAD's questions in one language over its passages in the other (a Spanish question
                        over English documents); same articles, same split.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = 13
SPLITS = {"squad2": (8, 3), "xquad-en": (24, 8), "xquad-es": (24, 8)}


@dataclass(slots=True)
class Question:
    id: str
    question: str
    language: str
    answers: list[str]
    answerable: bool
    split: str  # train | dev | test
    gold_passages: set[str] = field(default_factory=set)  # passage ids (QA sets)
    source: str | None = None  # evidence file and page (document sets)
    page: int | None = None
    kind: str = ""
    article: str = ""  # what the split is by: the article (QA sets) or the document (golden sets)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def resumed_rows(rows_file: Path, resume: bool) -> list[dict[str, Any]]:
    """A benchmark's rows from an earlier run when resuming (a line torn by a kill is skipped); when not
    resuming, the old rows file is removed so that the run starts afresh."""
    rows = []
    if resume and rows_file.exists():
        for line in rows_file.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    elif rows_file.exists():
        rows_file.unlink()
    return rows


def article_of(passage_id: str) -> str:
    return passage_id.split("#", 1)[0]


def split_articles(articles: list[str], sizes: tuple[int, int], seed: int = SEED) -> dict[str, str]:
    """article -> train | dev | test, by a fixed shuffle."""
    order = sorted(articles)
    random.Random(seed).shuffle(order)
    n_train, n_dev = sizes
    return {a: ("train" if i < n_train else "dev" if i < n_train + n_dev else "test") for i, a in enumerate(order)}


def _qa_folder(data: Path, name: str) -> Path:
    return {"squad2": data / "qa" / "squad2-en-half", "xquad-en": data / "qa" / "xquad" / "en",
            "xquad-es": data / "qa" / "xquad" / "es"}[name]


def documents_of(name: str) -> str:
    """The set whose documents `name`'s questions are asked over ("xquad-es@en" -> "xquad-en")."""
    if "@" not in name:
        return name
    asked, over = name.split("@", 1)
    return asked.rsplit("-", 1)[0] + "-" + over


def questions(data: Path, name: str) -> list[Question]:
    if "@" in name:
        return questions(data, name.split("@", 1)[0])
    if name.startswith("golden-"):
        language = name.split("-", 1)[1]
        rows = read_jsonl(data / "qa" / "golden-ca-es" / language / "golden.jsonl")
        return [Question(r["id"], r["question"], language, r["answers"], not r["unanswerable"], "test",
                         source=r["source"], page=r["page"], kind=r["kind"], article=r["source"]) for r in rows]
    folder = _qa_folder(data, name)
    passages = read_jsonl(folder / "passages.jsonl")
    split = split_articles(sorted({article_of(p["_id"]) for p in passages}), SPLITS[name])
    language = "es" if name.endswith("-es") else "en"
    out = []
    for r in read_jsonl(folder / "qa.jsonl"):
        gold = set(r.get("gold_passage_ids") or [])
        out.append(Question(r["id"], r["question"], language, r.get("answers") or [], not r.get("is_impossible"),
                            split[article_of(next(iter(gold)))], gold,
                            kind="unanswerable" if r.get("is_impossible") else "factoid",
                            article=article_of(next(iter(gold)))))
    return out


class LeakError(ValueError):
    """What would be trained or tuned on overlaps what is reported (seen by whoever runs the training)."""


def assert_disjoint(rows: list[dict[str, Any]]) -> None:
    """Refuse to fit on rows whose article is also in a reported (test) split, or on a never-train set."""
    fitted = {(r["set"].split("-")[0], r["article"]) for r in rows if r["split"] in ("train", "dev")}
    reported = {(r["set"].split("-")[0], r["article"]) for r in rows if r["split"] == "test"}
    # XQuAD en and es are translations of the same articles: both count as one ("xquad", article)
    leaked = sorted(fitted & reported)
    if leaked:
        raise LeakError(f"{len(leaked)} article(s) are both fitted on and reported: {leaked[:3]}")
    golden = [r for r in rows if r["set"].startswith("golden") and r["split"] != "test"]
    if golden:
        raise LeakError("the golden sets are never trained or tuned on")


def sample(qs: list[Question], split: str, per_kind: int, seed: int = SEED) -> list[Question]:
    """Up to `per_kind` answerable and as many unanswerable questions of one split, in a fixed order."""
    rng = random.Random(seed)
    out = []
    for answerable in (True, False):
        pool = [q for q in qs if q.split == split and q.answerable == answerable]
        rng.shuffle(pool)
        out += pool[:per_kind]
    rng.shuffle(out)
    return out


def data_dir(data: Path, name: str, work: Path) -> Path:
    """The data dir holding `name`'s documents indexed by `consulta`'s own pipeline (built on first use)."""
    from app.container import Services
    from app.settings import Settings

    name = documents_of(name)
    root = work / name
    if (root / "indexed").exists():
        return root / "data"
    t = time.perf_counter()
    services = Services(Settings(data_dir=root / "data"))
    if name.startswith("golden-"):
        folders = [data / "qa" / "golden-ca-es" / name.split("-", 1)[1] / "documents"]
    else:
        folder = root / "passages"
        folder.mkdir(parents=True, exist_ok=True)
        for p in read_jsonl(_qa_folder(data, name) / "passages.jsonl"):
            (folder / f"{p['_id'].replace('/', '_')}.txt").write_text(f"{p['title']}\n\n{p['text']}",
                                                                      encoding="utf-8")
        folders = [folder]
    services.pipeline.ingest(folders, "bench")
    services.close()
    (root / "indexed").write_text("ok")
    print(f"[bench] indexed {name} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return root / "data"


def passage_id(hit: Any) -> str:
    return Path(hit.chunk.source).stem


def holds_evidence(q: Question, hit: Any) -> bool:
    """Whether a retrieved passage is (part of) the question's gold passage or on its evidence page."""
    if q.gold_passages:
        return passage_id(hit) in q.gold_passages
    return Path(hit.chunk.source).name == q.source and hit.chunk.page == q.page
