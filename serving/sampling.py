"""Per-request sampler chains on llama.cpp's native samplers.

Each running sequence owns one chain, so requests with different settings share a batch.
`llama_sampler_sample(chain, ctx, idx)` samples from the logits of batch row `idx` and
accepts the token into the chain (which is what the repetition penalty remembers).
"""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp

from serving.generator import SamplingParams

PENALTY_LAST_N = 64  # tokens the repetition penalty looks back over, prompt included


def build_sampler(params: SamplingParams, n_vocab: int, prompt_tokens: Sequence[int]) -> int:
    """A sampler chain for `params`; the caller frees it with `llama_sampler_free`."""
    chain_params = llama_cpp.llama_sampler_chain_default_params()
    chain_params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(chain_params)
    if chain is None:
        raise RuntimeError("llama_sampler_chain_init returned NULL")
    add = lambda smpl: llama_cpp.llama_sampler_chain_add(chain, smpl)  # noqa: E731

    if params.repeat_penalty != 1.0:
        add(llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, params.repeat_penalty, 0.0, 0.0))
    if params.temperature <= 0.0:
        add(llama_cpp.llama_sampler_init_greedy())
    else:
        if params.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        add(llama_cpp.llama_sampler_init_dist(params.seed & 0xFFFFFFFF))

    if params.repeat_penalty != 1.0:
        for token in prompt_tokens[-PENALTY_LAST_N:]:
            llama_cpp.llama_sampler_accept(chain, token)
    return chain
