"""Per-request sampler chains on llama.cpp's native samplers.

Each running sequence owns one chain, so requests with different settings share a batch.
`llama_sampler_sample(chain, ctx, idx)` samples from the logits of batch row `idx` and
accepts the token into the chain (which is what the repetition penalty remembers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from serving.generator import SamplingParams

PENALTY_LAST_N = 64  # tokens the repetition penalty looks back over, prompt included


def json_grammar(schema: Mapping[str, Any] | None = None) -> str:
    """GBNF for JSON mode: any JSON object, or one that follows a JSON schema."""
    if schema is None:
        return JSON_GBNF
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare errors on schemas it does not support
        raise ValueError(f"unsupported JSON schema: {exc}") from exc


def grammar_sampler(vocab, grammar: str) -> int:
    """llama.cpp's grammar sampler for GBNF text; ValueError when the grammar does not parse."""
    smpl = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not smpl:
        raise ValueError("the grammar does not parse (GBNF with a 'root' rule expected)")
    return smpl


def is_plain_greedy(params: SamplingParams) -> bool:
    """Greedy with no penalty and no grammar: the next token is the row's argmax, which the engine takes
    straight from the logits (llama_sampler_sample copies the whole vocabulary into a candidate array first)."""
    return (params.temperature <= 0.0 and not params.grammar and params.repeat_penalty == 1.0
            and params.frequency_penalty == 0.0 and params.presence_penalty == 0.0)


def build_sampler(params: SamplingParams, n_vocab: int, prompt_tokens: Sequence[int], vocab=None) -> int:
    """A sampler chain for `params`; the caller frees it with `llama_sampler_free`.

    Order: repetition penalty, grammar (masks what the grammar forbids), then greedy or
    top-k -> top-p -> temperature -> seeded draw. `vocab` is needed only with a grammar.
    """
    chain_params = llama_cpp.llama_sampler_chain_default_params()
    chain_params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(chain_params)
    if chain is None:
        raise RuntimeError("llama_sampler_chain_init returned NULL")
    add = lambda smpl: llama_cpp.llama_sampler_chain_add(chain, smpl)  # noqa: E731

    penalised = params.repeat_penalty != 1.0 or params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
    if penalised:
        add(llama_cpp.llama_sampler_init_penalties(
            n_vocab, PENALTY_LAST_N, params.repeat_penalty, params.frequency_penalty, params.presence_penalty))
    if params.grammar:
        try:
            add(grammar_sampler(vocab, params.grammar))
        except ValueError:
            llama_cpp.llama_sampler_free(chain)
            raise
    if params.temperature <= 0.0:
        add(llama_cpp.llama_sampler_init_greedy())
    else:
        if params.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        add(llama_cpp.llama_sampler_init_dist(params.seed & 0xFFFFFFFF))

    if penalised:
        # the prompt's tail counts as already seen; only the penalty sampler is told (a grammar must not be)
        penalties = llama_cpp.llama_sampler_chain_get(chain, 0)
        for token in prompt_tokens[-PENALTY_LAST_N:]:
            llama_cpp.llama_sampler_accept(penalties, token)
    return chain
