"""A GGUF model in llama.cpp's low-level API: loading, the context and its batch, tokenising, the chat template,
token pieces and logits.

The context is used by the engine's decode thread only; tokenising reads the vocabulary and is safe from any
thread while the model is loaded.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np  # after llama_cpp: the other order crashed on a CUDA image (OpenMP runtimes clash)

from serving.generator import EngineClosedError, Message, ServingError

logger = logging.getLogger(__name__)
_native_logger = logging.getLogger("serving.engine.llama_cpp")  # the name the CLI quietens
_NATIVE_LEVELS = {3: logging.WARNING, 4: logging.ERROR}  # ggml: 1 debug, 2 info, 3 warn, 4 error, 5 cont


@llama_cpp.llama_log_callback
def _route_native_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """llama.cpp's own log lines go to Python logging instead of stderr (INFO shows as DEBUG)."""
    message = text.decode("utf-8", errors="replace").rstrip("\n")
    if message.strip():
        _native_logger.log(_NATIVE_LEVELS.get(level, logging.DEBUG), "%s", message)


def amx_cpu() -> bool:
    """llama.cpp's CPU backend was built with AMX (Sapphire Rapids and later). Its AMX weight buffers crash in
    the first matrix product with the bundled Q4_K_M models (ggml-org/llama.cpp#20824: a segmentation fault in
    ggml_backend_amx_mul_mat), so on such a CPU the model loads without the extra buffer types."""
    return "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode(errors="replace")


def high_level_llama(model_path: str | Path, **kwargs: Any) -> Any:
    """llama-cpp-python's high-level `Llama` (the reference the tests and benches compare the engine with),
    loaded as `LlamaModel` loads on an AMX CPU (see `amx_cpu`). It has no switch for the buffer types, so its
    default model parameters are wrapped while it loads."""
    import llama_cpp.llama_cpp as low  # the module llama_cpp.Llama takes its default parameters from

    if not amx_cpu():
        return llama_cpp.Llama(str(model_path), **kwargs)
    defaults = low.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_extra_buffers
    try:
        return llama_cpp.Llama(str(model_path), **kwargs)
    finally:
        low.llama_model_default_params = defaults


def init_backend() -> None:
    """Route llama.cpp's log to Python logging and initialise its backend (once per process is enough)."""
    llama_cpp.llama_log_set(_route_native_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


class LlamaModel:
    """The model, its context (`n_ctx` KV cells shared out among `max_sequences` sequences) and a batch of
    `n_batch` rows; see `BatchingEngine` for the settings."""

    def __init__(self, model_path: Path, *, n_ctx: int, n_threads: int, n_gpu_layers: int, max_sequences: int,
                 n_batch: int, flash_attn: bool, kv_unified: bool, n_ctx_per_seq: int | None) -> None:
        self.model_path = model_path
        self.model_id = model_path.stem
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.max_sequences = max_sequences
        self.n_batch = n_batch
        self.flash_attn = flash_attn
        self.kv_unified = kv_unified
        self._n_ctx_per_seq_setting = n_ctx_per_seq
        self.n_ctx_per_seq = n_ctx_per_seq or n_ctx // max_sequences  # final after load
        self.gpu_offload = False  # set by load: layers asked for and a GPU backend to take them
        self.model: Any = None
        self.ctx: Any = None
        self.vocab: Any = None
        self.mem: Any = None
        self.batch: llama_cpp.llama_batch | None = None
        self.n_vocab = 0
        self._chat_formatter: Any = None  # made from the GGUF's chat template by load
        self._piece_buf = ctypes.create_string_buffer(256)

    # -- loading --------------------------------------------------------------------------
    def load(self) -> None:
        """Load the weights, create the context and the batch, read the chat template."""
        self.gpu_offload = self.n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
        if self.n_gpu_layers != 0 and not self.gpu_offload:
            logger.warning(
                "n_gpu_layers=%d asks for GPU offload, but this llama-cpp-python was built without a GPU backend, so "
                "every layer runs on the CPU; rebuild it with `CONSULTA_CUDA=1 bash scripts/install.sh` "
                "(docs/serving.md, 'GPU (CUDA) build')", self.n_gpu_layers)
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = self.n_gpu_layers
        if amx_cpu() and hasattr(mparams, "use_extra_bufts"):
            mparams.use_extra_bufts = False  # no AMX (nor repacked) weight buffers: see amx_cpu
            logger.info("this CPU has AMX: %s loads without llama.cpp's AMX weight buffers", self.model_id)
        model = llama_cpp.llama_model_load_from_file(str(self.model_path).encode(), mparams)
        if not model:
            raise ServingError(f"llama.cpp could not load {self.model_path} (not a GGUF model, or unsupported)")
        ctx = llama_cpp.llama_init_from_model(model, self._context_params())
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ServingError(f"llama.cpp could not create a context for {self.model_id} (n_ctx={self.n_ctx})")
        self.model, self.ctx = model, ctx
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.mem = llama_cpp.llama_get_memory(ctx)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.n_ctx = llama_cpp.llama_n_ctx(ctx)  # llama.cpp rounds the per-sequence size up to 256
        n_ctx_seq = llama_cpp.llama_n_ctx_seq(ctx)  # what one sequence can hold (all of n_ctx if unified)
        fair_share = self.n_ctx // self.max_sequences if self.kv_unified else n_ctx_seq
        self.n_ctx_per_seq = min(self._n_ctx_per_seq_setting or fair_share, n_ctx_seq)
        self._chat_formatter = self._make_chat_formatter()

    def _context_params(self) -> Any:
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx
        cparams.n_batch = cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = self.max_sequences
        cparams.n_threads = cparams.n_threads_batch = self.n_threads
        cparams.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        cparams.kv_unified = self.kv_unified
        cparams.no_perf = True
        return cparams

    def warm_decode(self) -> None:
        """One throwaway forward pass, so the first request does not pay for paging in the weights."""
        batch = self.batch
        assert batch is not None  # allocated by load, before this
        batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = 0, 0, 1, 1  # type: ignore[call-overload]  # ctypes stubs
        batch.seq_id[0][0] = 0
        batch.n_tokens = 1
        rc = llama_cpp.llama_decode(self.ctx, batch)
        llama_cpp.llama_memory_seq_rm(self.mem, 0, -1, -1)
        if rc != 0:
            raise ServingError(f"llama.cpp failed a test forward pass of {self.model_id} (code {rc})")

    def _make_chat_formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        source = llama_cpp.llama_model_chat_template(self.model, None)
        if not source:
            logger.warning("%s has no chat template in its metadata; using ChatML", self.model_id)
            source = _CHATML
        return Jinja2ChatFormatter(
            template=source.decode("utf-8") if isinstance(source, bytes) else source,
            eos_token=self._special(llama_cpp.llama_vocab_eos(self.vocab)),
            bos_token=self._special(llama_cpp.llama_vocab_bos(self.vocab)),
            add_generation_prompt=True,
        )

    def _special(self, token: int) -> str:
        return llama_cpp.llama_vocab_get_text(self.vocab, token).decode("utf-8", "replace") if token >= 0 else ""

    def free(self) -> None:
        """Free the batch, the context and the model (the decode thread's last act)."""
        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = self.mem = None
        if self.model:
            self.vocab = None
            llama_cpp.llama_model_free(self.model)
            self.model = None

    # -- text and tokens ------------------------------------------------------------------
    def format_chat(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The prompt the model sees for `messages` (and `tools`, OpenAI function specs): its own chat template
        from the GGUF."""
        return self._chat_formatter(messages=[dict(m) for m in messages],
                                    tools=[dict(t) for t in tools] if tools else None).prompt

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        if self.vocab is None:
            raise EngineClosedError("the engine is closed")
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
            if n >= 0:
                return tokens[:n]
            capacity = -n

    def tokenize_prompt(self, prompt: str) -> list[int]:
        """A raw prompt's tokens: BOS added if the model wants it, once even if the text already began with it."""
        tokens = self.tokenize(prompt, add_special=True, parse_special=True)
        if len(tokens) > 1 and tokens[0] == tokens[1] == llama_cpp.llama_vocab_bos(self.vocab):
            tokens = tokens[1:]
        return tokens

    def piece(self, token: int) -> bytes:
        """A token's bytes (a piece of a UTF-8 character, possibly)."""
        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            self._piece_buf = buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def is_end(self, token: int) -> bool:
        """An end-of-generation token."""
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    # -- logits and KV --------------------------------------------------------------------
    def row_logits(self, row: int) -> np.ndarray:
        """A view of a batch row's logits; valid until the next decode overwrites them."""
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, row), shape=(self.n_vocab,))

    def logprobs(self, row: int, tokens: Sequence[int]) -> list[float]:
        """The log-softmax of a batch row's logits at `tokens` (read before the next decode overwrites them)."""
        logits = self.row_logits(row)
        top = float(logits.max())
        log_z = top + float(np.log(np.exp(logits - top, dtype=np.float64).sum()))
        return [float(logits[t]) - log_z for t in tokens]

    def kv_cells_used(self) -> int:
        return sum(llama_cpp.llama_memory_seq_pos_max(self.mem, i) + 1 for i in range(self.max_sequences))


_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
