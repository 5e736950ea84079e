"""Train the answerability verifier (app/answerability.py) on articles no reported figure uses, and report it.

    python bench/verifier.py [--data ../shared/data] [--per-kind 150] [--write app/verifier.json]
                             [--results docs/benchmarks/results/verifier.json]

Sets and splits (by article, fixed seed; the split is written into the weights file):
  SQuAD2-half (en): 16 articles -> 8 train, 3 dev, 5 test.
  XQuAD (en, es, the same articles translated): 48 articles -> 24 train, 8 dev, 16 test.
  golden-ca-es (ca, es): never trained or tuned on; reported whole.

Examples, each a question with the top-k passages the product's own retriever returns from the whole set:
  answerable  a question whose gold passage is among them (label 1);
  adversarial a SQuAD 2.0 unanswerable question (label 0);
  related     an answerable question asked with its gold passage taken out of the results (label 0): the
              passages are related but lack the answer.
The logistic regression is fitted on train, its threshold chosen on dev (the most refusals of unanswerable
questions with at most 10% false refusals), and every figure below is on test articles or the golden sets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.answerability import FEATURES, AnswerabilityVerifier, VerifierWeights  # noqa: E402
from app.container import Services  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.qa_sets import SEED, Question, assert_disjoint, data_dir, holds_evidence, questions, sample  # noqa: E402

K = 4
SETS = ("squad2", "xquad-es", "xquad-en", "golden-ca", "golden-es", "xquad-es@en", "xquad-en@es")


def is_cross(name: str) -> bool:
    """The set asks its questions over documents in another language (app/answerability.py: `cross`)."""
    return "@" in name


def examples(services: Services, verifier: AnswerabilityVerifier, q: Question) -> list[dict[str, Any]]:
    """The question with the product's top-k (label: does the evidence come back?) and, for an answerable
    question, once more with its evidence taken out of the results (label 0: related passages lacking it)."""
    hits = services.retriever.retrieve(q.question, K + 6, None, language=q.language)
    top = hits[:K]
    rows = [{"kind": q.kind if not q.answerable else "answerable",
             "label": int(q.answerable and any(holds_evidence(q, h) for h in top)),
             "features": verifier.features(q.question, top, q.language), "passages": [h.chunk.text for h in top]}]
    if q.answerable:
        lacking = [h for h in hits if not holds_evidence(q, h)][:K]
        rows.append({"kind": "related", "label": 0, "features": verifier.features(q.question, lacking, q.language),
                     "passages": [h.chunk.text for h in lacking]})
    return rows


def build(data: Path, work: Path, per_kind: int, sets: tuple[str, ...] = SETS) -> list[dict[str, Any]]:
    """Feature rows {set, split, language, kind, label, features, question, cross} for each set."""
    out: list[dict[str, Any]] = []
    for name in sets:
        services = Services(Settings(data_dir=data_dir(data, name, work)))
        store = services.store
        zero = VerifierWeights(tuple([0.0] * len(FEATURES)), 0.0, tuple([0.0] * len(FEATURES)),
                               tuple([1.0] * len(FEATURES)), 0.5)
        verifier = AnswerabilityVerifier(zero, lambda terms: store.bm25.idf(terms), store.analyzers,
                                         services.embedder)
        qs = questions(data, name)
        chosen = qs if name.startswith("golden-") else [
            q for split in ("train", "dev", "test") for q in sample(qs, split, per_kind if split != "test"
                                                                   else per_kind // 2)]
        for q in chosen:
            for row in examples(services, verifier, q):
                out.append({"set": name, "split": q.split, "language": q.language, "question": q.question,
                            "article": q.article, "cross": is_cross(name), **row})
        services.close()
        print(f"[verifier] {name}: {sum(r['set'] == name for r in out)} examples", file=sys.stderr)
    return out


def fit(rows: list[dict[str, Any]]) -> tuple[VerifierWeights, dict[str, Any]]:
    """The main weights on same-language rows and the cross-language weights on the others (each: logistic
    regression on the train split, threshold on dev); refuses rows that leak into the test split."""
    assert_disjoint(rows)
    main, fitted = _fit([r for r in rows if not r.get("cross")])
    crossed = [r for r in rows if r.get("cross")]
    if not crossed:
        return main, fitted
    cross, cross_fitted = _fit(crossed)
    return replace(main, cross=cross), {**fitted, "cross": cross_fitted}


def _fit(rows: list[dict[str, Any]]) -> tuple[VerifierWeights, dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression

    def matrix(part: str) -> tuple[np.ndarray, np.ndarray]:
        sel = [r for r in rows if r["split"] == part and not r["set"].startswith("golden")]
        return (np.array([[r["features"][f] for f in FEATURES] for r in sel], dtype=np.float64),
                np.array([r["label"] for r in sel]))

    x, y = matrix("train")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit((x - mean) / scale, y)
    xd, yd = matrix("dev")
    zd = (xd - mean) / scale @ model.coef_[0] + model.intercept_[0]
    pd = 1 / (1 + np.exp(-zd))
    best, best_refused = 0.0, -1.0
    for t in np.unique(np.round(pd, 4)):
        false = float(np.mean(pd[yd == 1] < t)) if (yd == 1).any() else 0.0
        refused = float(np.mean(pd[yd == 0] < t)) if (yd == 0).any() else 0.0
        if false <= 0.10 and refused > best_refused:
            best, best_refused = float(t), refused
    weights = VerifierWeights(tuple(float(c) for c in model.coef_[0]), float(model.intercept_[0]),
                              tuple(float(m) for m in mean), tuple(float(s) for s in scale), best)
    return weights, {"train_examples": int(len(y)), "dev_examples": int(len(yd)), "dev_refused_unanswerable":
                     best_refused, "threshold": best}


def report(rows: list[dict[str, Any]], weights: VerifierWeights) -> dict[str, Any]:
    verifier = AnswerabilityVerifier(weights, lambda terms: [0.0] * len(terms))
    out: dict[str, Any] = {}
    for name in sorted({r["set"] for r in rows}):
        sel = [r for r in rows if r["set"] == name and r["split"] == "test"]
        if not sel:
            continue
        threshold = verifier.weights_for(any(r.get("cross") for r in sel)).threshold
        p = np.array([verifier.probability(r["features"], bool(r.get("cross"))) for r in sel])
        y = np.array([r["label"] for r in sel])
        kinds = {}
        for kind in sorted({r["kind"] for r in sel}):
            mask = np.array([r["kind"] == kind for r in sel])
            kinds[kind] = {"n": int(mask.sum()), "refused": round(float(np.mean(p[mask] < threshold)), 3)}
        out[name] = {"n": len(sel), "refused_unanswerable": round(float(np.mean(p[y == 0] < threshold)), 3)
                     if (y == 0).any() else None,
                     "false_refusals": round(float(np.mean(p[y == 1] < threshold)), 3) if (y == 1).any()
                     else None, "by_kind": kinds}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "consulta-bench")
    ap.add_argument("--per-kind", type=int, default=150)
    ap.add_argument("--write", type=Path, default=None, help="write the fitted weights here (app/verifier.json)")
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--refit", action="store_true", help="fit again on the feature rows saved by the last run")
    ap.add_argument("--sets", default=None,
                    help="build only these sets' rows (comma-separated) and put them in place of their saved ones")
    args = ap.parse_args()
    t0 = time.perf_counter()
    saved = args.work / "rows.json"
    if args.sets:
        only = tuple(args.sets.split(","))
        kept = [r for r in json.loads(saved.read_text(encoding="utf-8")) if r["set"] not in only] \
            if saved.exists() else []
        rows = kept + build(args.data, args.work, args.per_kind, only)
        saved.write_text(json.dumps(rows), encoding="utf-8")
    elif args.refit and saved.exists():
        rows = json.loads(saved.read_text(encoding="utf-8"))
        articles = {(name, q.question): q.article for name in SETS for q in questions(args.data, name)}
        for r in rows:
            r.setdefault("article", articles[(r["set"], r["question"])])
    else:
        rows = build(args.data, args.work, args.per_kind)
        saved.write_text(json.dumps(rows), encoding="utf-8")
    weights, fitted = fit(rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    weights = replace(weights, trained_on={
        "command": " ".join(sys.argv), "commit": commit, "seed": SEED, "k": K,
        "splits": "SQuAD2-half 8/3/5 articles, XQuAD 24/8/16 articles (train/dev/test), XQuAD's questions over "
                  "the other language's passages on the same split; golden-ca-es never used", **fitted})
    result = {"command": "python " + " ".join(sys.argv), "commit": commit,
              "date": time.strftime("%Y-%m-%d"), "machine": f"{__import__('os').cpu_count()} cores",
              "seconds": round(time.perf_counter() - t0, 1), "fitted": fitted,
              "weights": dict(zip(FEATURES, [round(c, 3) for c in weights.coef], strict=True)),
              "cross_weights": dict(zip(FEATURES, [round(c, 3) for c in weights.cross.coef], strict=True))
              if weights.cross is not None else None,
              "test": report(rows, weights)}
    if args.write:
        args.write.write_text(json.dumps(weights.to_dict(), indent=1) + "\n", encoding="utf-8")
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
