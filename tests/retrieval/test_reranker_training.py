"""The cross-encoder re-ranker that Consulta fine-tunes on a corpus's own passages (retrieval/reranker_training.py)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval.reranker import CrossEncoderReranker, interpolate
from retrieval.reranker_training import (
    RerankerTrainingError,
    SyntheticQuery,
    TrainingConfig,
    clean_question,
    mine_pairs,
    ranking_metrics,
    sweep_stale_training,
    train_cross_encoder,
)
from retrieval.types import Chunk, Hit
from tests.retrieval.reranker_corpus import PASSAGES

REPO = Path(__file__).resolve().parents[2]
CHUNKS = [Chunk(f"c{i}", f"d{i}", text, 0, len(text), {"language": "en"}) for i, (text, _) in enumerate(PASSAGES)]
TEXTS = {c.id: c.text for c in CHUNKS}
TRAIN = [SyntheticQuery(qs[0], f"c{i}") for i, (_, qs) in enumerate(PASSAGES)]
HELD_OUT = [SyntheticQuery(qs[1], f"c{i}") for i, (_, qs) in enumerate(PASSAGES)]
# Enough steps for 36 pairs to move a new classification head (the listwise default suits hundreds of questions,
# not twelve: with batches of 8 questions it would take two steps an epoch).
SMALL = TrainingConfig(loss="pointwise", epochs=12, learning_rate=1e-4, batch_size=8)  # 10-11 of 12 over seeds 0-2


def shuffled(question: str) -> list[Hit]:
    """A first stage that knows nothing: every passage, in an order fixed by the question."""
    order = list(CHUNKS)
    random.Random(question).shuffle(order)
    return [Hit(c, 0.0) for c in order]


def model_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    pairs, _ = mine_pairs(TRAIN, shuffled, TEXTS, negatives=3)
    return train_cross_encoder(pairs, tmp_path_factory.mktemp("ce") / "reranker", config=SMALL)


def test_questions_are_taken_from_the_reply_and_loops_are_dropped():
    assert clean_question('Question: "How many days of holiday do staff get?"\n') == \
        "How many days of holiday do staff get?"
    assert clean_question("1. ¿Cuántos días de vacaciones hay al año?") == "¿Cuántos días de vacaciones hay al año?"
    assert clean_question("\n\nWhen does the office open?\nIt opens at 8.") == "When does the office open?"
    assert clean_question("What is the answer to the question: what is the answer to the question: what") is None
    assert clean_question("Yes") is None and clean_question("") is None


def test_mining_keeps_questions_that_find_their_passage_and_pairs_them_with_other_passages():
    pairs, ranks = mine_pairs(TRAIN, lambda q: shuffled(q)[:5], TEXTS, negatives=3, keep_within=5)
    kept = [r for r in ranks if r["rank"] is not None]
    assert len(ranks) == len(TRAIN) and 0 < len(kept) < len(TRAIN)
    positives = [p for p in pairs if p.label == 1.0]
    assert len(positives) == len(kept) and len(pairs) == 4 * len(kept)
    for p in positives:
        q = next(q for q in TRAIN if q.question == p.question)
        assert p.passage == TEXTS[q.chunk_id]
        negatives = [n.passage for n in pairs if n.question == p.question and n.label == 0.0]
        assert len(negatives) == 3 and p.passage not in negatives


def test_trained_reranker_ranks_the_passage_of_unseen_questions_first(trained):
    """Trained on one question per passage, it ranks the passage of the other, unseen question first, where the
    first stage it re-ranks has no idea (1 in 12 by chance)."""
    reranker = CrossEncoderReranker(str(trained))
    before, after = [], []
    for q in HELD_OUT:
        hits = shuffled(q.question)
        before.append([h.chunk.id for h in hits].index(q.chunk_id) + 1)
        after.append([h.chunk.id for h in reranker.rerank(q.question, hits, len(hits))].index(q.chunk_id) + 1)
    assert ranking_metrics(after)["hit@1"] >= 0.75, after
    assert ranking_metrics(after)["ndcg@10"] > ranking_metrics(before)["ndcg@10"] + 0.3


def test_reranker_scores_only_the_top_and_keeps_the_tail_in_order(trained):
    hits = shuffled("How long must a password be?")
    out = CrossEncoderReranker(str(trained), top=4).rerank("How long must a password be?", hits, 12)
    assert {h.chunk.id for h in out[:4]} == {h.chunk.id for h in hits[:4]}
    assert [h.chunk.id for h in out[4:]] == [h.chunk.id for h in hits[4:]]


def test_blend_moves_from_the_models_order_to_the_first_stages():
    scores = [0.1, 0.2, 0.9, 0.3]  # the model prefers the third first-stage hit
    assert interpolate(scores, 0.0) == [2, 3, 1, 0]
    assert interpolate(scores, 100.0) == [0, 1, 2, 3]
    mixed = interpolate(scores, 1.0)
    assert mixed[0] == 2 and mixed.index(0) < mixed.index(3)  # a strong model score still wins; the rest lean on rank


def test_a_trained_folder_carries_the_blend_its_training_chose(trained):
    assert CrossEncoderReranker(str(trained)).blend == 0.0  # no manifest: the model's order alone
    (trained / "consulta-reranker.json").write_text('{"blend": 2.0}', encoding="utf-8")
    try:
        assert CrossEncoderReranker(str(trained)).blend == 2.0
        assert CrossEncoderReranker(str(trained), blend=0.5).blend == 0.5  # a setting overrides it
    finally:
        (trained / "consulta-reranker.json").unlink()


def test_listwise_training_groups_each_question_with_its_negatives(tmp_path):
    """The default loss: one row per question (its passage, then its hard negatives), trained and loadable."""
    pairs, _ = mine_pairs(TRAIN, shuffled, TEXTS, negatives=3, random_negatives=2)
    out = train_cross_encoder(pairs, tmp_path / "listwise", config=TrainingConfig(epochs=1))
    reranked = CrossEncoderReranker(str(out)).rerank(HELD_OUT[0].question, shuffled(HELD_OUT[0].question), 12)
    assert sorted(h.chunk.id for h in reranked) == sorted(c.id for c in CHUNKS)
    with pytest.raises(RerankerTrainingError, match="3 negatives"):
        train_cross_encoder(mine_pairs(TRAIN, lambda q: shuffled(q)[:2], TEXTS, negatives=3)[0] +
                            [p for p in pairs if p.label == 1.0][:1], tmp_path / "too-few",
                            config=TrainingConfig(epochs=1))


def test_training_without_negatives_fails_clearly_and_keeps_the_model(trained):
    before = model_digest(trained)
    only_positive = [p for p in mine_pairs(TRAIN, shuffled, TEXTS)[0] if p.label == 1.0]
    with pytest.raises(RerankerTrainingError, match="positive and negative"):
        train_cross_encoder(only_positive, trained, config=SMALL)
    with pytest.raises(RerankerTrainingError, match="no training pairs"):
        train_cross_encoder([], trained, config=SMALL)
    assert model_digest(trained) == before


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_training_run_stopped_mid_way_leaves_the_previous_model_whole_and_no_litter(trained, sig):
    """A training run killed mid-way never leaves a half-written model where the re-ranker loads from. Ctrl-C
    cleans up its work folder at once; after kill -9 the next run sweeps it, but not the folder of a live run."""
    before = model_digest(trained)
    script = (
        # a shell starts background jobs with SIGINT ignored (a suite run with `&`); a terminal's Ctrl-C is not
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler);"
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.retrieval.test_reranker_training import TRAIN, TEXTS, shuffled;"
        "from retrieval.reranker_training import mine_pairs, train_cross_encoder, TrainingConfig;"
        "pairs = mine_pairs(TRAIN, shuffled, TEXTS)[0] * 20;"
        "print('training', flush=True);"
        "train_cross_encoder(pairs, __import__('pathlib').Path(sys.argv[2]),"
        " config=TrainingConfig(loss='pointwise', epochs=5))")
    proc = subprocess.Popen([sys.executable, "-c", script, str(REPO), str(trained)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "training"
        deadline = time.monotonic() + 180  # imports and the model load come first; slow when the cores are shared
        while not list(trained.parent.glob(trained.name + ".training-*/owner.pid")) and proc.poll() is None:
            assert time.monotonic() < deadline, "the training run never created its work folder"
            time.sleep(0.5)
        time.sleep(4)  # inside the training loop (it would run for minutes)
        assert proc.poll() is None, "the training run ended before it could be stopped"
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        proc.kill()  # never left running to overwrite the model after a failure here
        proc.wait()
    assert model_digest(trained) == before
    left = list(trained.parent.glob(trained.name + ".training-*"))
    if sig == signal.SIGINT:
        assert left == []
    else:
        assert len(left) == 1 and (left[0] / "owner.pid").read_text() == str(proc.pid)
        alive = trained.parent / (trained.name + ".training-alive")
        alive.mkdir()
        (alive / "owner.pid").write_text(str(os.getpid()))
        assert sweep_stale_training(trained) == left
        assert not left[0].exists() and alive.exists()
        alive.joinpath("owner.pid").unlink()
        alive.rmdir()
    hits = shuffled("How many holiday days do full-time staff have?")
    assert CrossEncoderReranker(str(trained)).rerank("How many holiday days do full-time staff have?", hits, 1)
