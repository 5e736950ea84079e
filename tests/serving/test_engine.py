"""BatchingEngine on a real model (SmolLM2-135M, 2 threads): what a caller of the engine notices."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.detokenizer import IncrementalDetokenizer
from serving.engine import BatchingEngine
from serving.generator import (
    EngineBusyError,
    EngineClosedError,
    GenerationError,
    Generator,
    ModelNotFoundError,
    PromptTooLongError,
    SamplingParams,
)
from serving.llama_model import high_level_llama

GREEDY = SamplingParams(max_tokens=24)
QUESTIONS = [
    "Name three colors.",
    "What is 2+2?",
    "Write a haiku about the sea.",
    "Who wrote Hamlet?",
    "What is the capital of Italy?",
    "Give me a synonym for happy.",
    "How many legs does a spider have?",
    "What is water made of?",
    "Name a planet in the solar system.",
    "What do bees make?",
    "Which animal says moo?",
    "What is the opposite of hot?",
    "Name a fruit that is yellow.",
    "How many days are in a week?",
    "What color is the sky?",
    "What is the largest ocean?",
]


def chat(question: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]


def consume(stream) -> list[str]:
    return list(stream)


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_is_a_generator(engine):
    assert isinstance(engine, Generator)
    assert engine.model_id == "SmolLM2-135M-Instruct.Q4_1"
    assert engine.count_tokens("Hello world") == 2


def test_batched_greedy_equals_solo_greedy(engine):
    """Sharing a batch must not change a request's output (per-sequence KV streams, row-wise kernels)."""
    questions = QUESTIONS[:4]
    solo = [engine.generate(chat(q), GREEDY).text for q in questions]
    streams = [engine.stream(chat(q), GREEDY) for q in questions]
    with ThreadPoolExecutor(len(streams)) as pool:
        deltas = list(pool.map(consume, streams))
    assert [s.completion.text for s in streams] == solo
    assert ["".join(d) for d in deltas] == solo
    assert all(s.completion.finish_reason in ("stop", "length") for s in streams)


def test_greedy_takes_the_same_tokens_as_llama_cpps_greedy_sampler(engine, smollm2_path):
    """Plain greedy requests skip the sampler chain (the logits' argmax, read with numpy); llama-cpp-python's
    high-level Llama samples through llama.cpp's greedy sampler. Batched together, the same text comes out."""

    prompts = [engine.format_chat(chat(q)) for q in QUESTIONS[4:8]]
    llm = high_level_llama(smollm2_path, n_ctx=512, n_batch=256, n_threads=2, verbose=False)
    try:
        reference = [llm.create_completion(p, max_tokens=GREEDY.max_tokens, temperature=0.0,
                                           repeat_penalty=1.0)["choices"][0]["text"] for p in prompts]
    finally:
        llm.close()
    streams = [engine.stream_prompt(p, GREEDY) for p in prompts]
    with ThreadPoolExecutor(len(streams)) as pool:
        list(pool.map(consume, streams))
    assert [s.completion.text for s in streams] == reference
    assert len(set(reference)) == len(reference)  # four different answers, not one echoed


def test_sixteen_concurrent_streams_each_get_their_own_text(engine):
    params = SamplingParams(max_tokens=12)
    solo = {q: engine.generate(chat(q), params).text for q in QUESTIONS}
    streams = {q: engine.stream(chat(q), params) for q in QUESTIONS}  # 8 run, 8 wait for a slot
    with ThreadPoolExecutor(len(streams)) as pool:
        deltas = dict(zip(streams, pool.map(consume, streams.values())))
    for q, stream in streams.items():
        c = stream.completion
        assert c.finish_reason in ("stop", "length"), (q, c)
        assert c.text and "".join(deltas[q]) == c.text == solo[q], q
        assert c.ttft_ms is not None and c.total_ms >= c.ttft_ms >= c.queue_ms
    assert len(set(solo.values())) > 12  # the prompts really ask for different things
    stats = engine.stats()
    assert stats["running"] == 0 and stats["waiting"] == 0 and stats["kv_cells_used"] == 0


def test_cancel_frees_the_kv_cache_and_the_engine_keeps_serving(engine):
    stream = engine.stream(chat("Tell me a long story about a dragon."), SamplingParams(max_tokens=200))
    it = iter(stream)
    for _ in range(3):
        next(it)
    assert engine.stats()["kv_cells_used"] > 0
    stream.cancel()
    list(it)  # a delta already in flight may still arrive; then the stream ends
    assert stream.completion.finish_reason == "cancelled"
    assert stream.completion.completion_tokens < 200
    stats = engine.stats()  # every slot's llama_memory_seq_pos_max is -1 again
    assert stats["running"] == 0 and stats["kv_cells_used"] == 0
    assert engine.generate(chat("What is 2+2?"), GREEDY).finish_reason in ("stop", "length")


def test_a_consumer_that_stops_reading_cancels_its_request(engine):
    cancelled = engine.stats()["requests_finished"].get("cancelled", 0)
    for _ in engine.stream(chat("Count from one to one hundred."), SamplingParams(max_tokens=200)):
        break  # the iterator is closed here
    wait_until(lambda: engine.stats()["requests_finished"].get("cancelled", 0) == cancelled + 1)
    wait_until(lambda: engine.stats()["kv_cells_used"] == 0)


def test_a_prompt_longer_than_the_context_is_refused(engine):
    with pytest.raises(PromptTooLongError, match=r"exceeds the per-request context of 512 tokens"):
        engine.stream(chat("word " * 600), GREEDY)
    with pytest.raises(PromptTooLongError, match=r"max_tokens 500"):
        engine.stream(chat("Hi"), SamplingParams(max_tokens=500))
    assert engine.generate(chat("Hi"), SamplingParams(max_tokens=4)).text


def test_stop_strings_are_not_emitted_even_across_tokens(engine):
    question = "Write a haiku about the sea."
    full = engine.generate(chat(question), GREEDY).text
    stop = full[len(full) // 2 : len(full) // 2 + 6]  # starts mid-token in general
    assert len(stop) == 6
    stream = engine.stream(chat(question), SamplingParams(max_tokens=24, stop=("never-seen", stop)))
    streamed = "".join(stream)
    assert streamed == stream.completion.text == full[: full.find(stop)]
    assert stop not in streamed
    assert stream.completion.finish_reason == "stop"


def test_utf8_text_round_trips(engine):
    text = "¿Qué año? Sí, què 🙂"
    # token by token through the engine's own detokenisation: no split characters, nothing lost
    detok = IncrementalDetokenizer()
    tokens = engine.model.tokenize(text, add_special=False, parse_special=False)
    deltas = [detok.push(engine.model.piece(t)) for t in tokens]
    assert "".join(deltas) == text and all("\ufffd" not in d for d in deltas)
    # and through a real generation, with a stop string that ends it
    prompt = "Text: ¿Qué año? Sí, què 🙂\nCopy: ¿Qué año? Sí, què 🙂\nText: Adéu, què tal? 🎉\nCopy:"
    stream = engine.stream_prompt(prompt, SamplingParams(max_tokens=16, stop=("\n",)))
    deltas = list(stream)
    assert "".join(deltas).strip() == "Adéu, què tal? 🎉"
    assert all("\ufffd" not in d for d in deltas)
    assert stream.completion.finish_reason == "stop"


def test_async_iteration(engine):
    async def run() -> str:
        stream = engine.stream(chat("What is 2+2?"), GREEDY)
        return "".join([delta async for delta in stream])

    assert asyncio.run(run()) == engine.generate(chat("What is 2+2?"), GREEDY).text


def test_a_full_queue_is_refused_and_close_fails_waiting_requests(smollm2_path):
    engine = BatchingEngine(smollm2_path, n_ctx=512, n_threads=2, max_sequences=1, max_queue=1)
    engine.warm_up()
    try:
        running = engine.stream(chat("Tell me a story."), SamplingParams(max_tokens=200))
        it = iter(running)
        next(it)  # it holds the only slot now
        waiting = engine.stream(chat("Hi"), GREEDY)
        with pytest.raises(EngineBusyError):
            engine.stream(chat("Hello"), GREEDY)
        assert engine.stats()["waiting"] == 1
    finally:
        engine.close()
    with pytest.raises(EngineClosedError):
        list(waiting)
    with pytest.raises(EngineClosedError):
        list(it)
    assert waiting.completion.finish_reason == running.completion.finish_reason == "error"
    with pytest.raises(EngineClosedError):
        engine.stream(chat("Hi"), GREEDY)


def test_gpu_layers_without_a_gpu_build_say_so_and_run_on_the_cpu(smollm2_path, caplog):
    """This machine's llama-cpp-python is the CPU build: asking for offload must not pass silently."""
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("llama-cpp-python here is a GPU build, so offload works and there is no warning to check; "
                    "this test covers the CPU build that CI and the development machines have")
    with caplog.at_level("WARNING", logger="serving.llama_model"):
        with BatchingEngine(smollm2_path, n_ctx=1024, n_threads=2, max_sequences=2, n_gpu_layers=-1) as eng:
            text = eng.generate(chat(QUESTIONS[1]), SamplingParams(max_tokens=4)).text
            assert eng.stats()["gpu_offload"] is False
    assert text
    assert "CONSULTA_CUDA=1 bash scripts/install.sh" in caplog.text and "n_gpu_layers=-1" in caplog.text


def test_a_missing_model_file_is_named(tmp_path):
    missing = tmp_path / "models" / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match="nope.gguf"):
        BatchingEngine(missing)


def test_requests_time_out(smollm2_path):
    with BatchingEngine(smollm2_path, n_ctx=512, n_threads=2, max_sequences=1, request_timeout_s=0.3) as engine:
        stream = engine.stream(chat("Tell me a story."), SamplingParams(max_tokens=200))
        with pytest.raises(GenerationError, match="timed out"):
            list(stream)
        assert stream.completion.finish_reason == "error"
        assert engine.stats()["kv_cells_used"] == 0



def test_a_unified_kv_cache_lets_one_request_use_more_than_its_share(smollm2_path):
    with BatchingEngine(smollm2_path, n_ctx=1024, n_threads=2, max_sequences=2, kv_unified=True,
                        n_ctx_per_seq=900) as engine:
        assert engine.n_ctx_per_seq == 900 > engine.n_ctx // 2
        completion = engine.generate(chat("hello " * 560 + "\nSay hi."), SamplingParams(max_tokens=4))
        assert completion.prompt_tokens > 512 and completion.finish_reason in ("stop", "length")
        assert engine.stats()["kv_cells_used"] == 0


def test_next_token_logprobs_scores_candidates_without_generating(engine):
    prompts = ["Yes, yes, yes, yes, yes, yes,", "No, no, no, no, no, no,", "Is snow white? Answer yes or no:"] * 4
    finished = engine.stats()["requests_finished"].get("scored", 0)
    running = engine.stream(chat("Tell me a long story about a dragon."), SamplingParams(max_tokens=60))
    scores = engine.next_token_logprobs(prompts, [" yes", " no"])  # batched with the story's decoding
    assert "".join(running) and running.completion.finish_reason in ("stop", "length")
    assert len(scores) == 12 and all(set(s) == {" yes", " no"} for s in scores)
    assert all(p < 0 for s in scores for p in s.values())
    assert scores[0][" yes"] > -1.0 > scores[0][" no"]
    assert scores[1][" no"] > -1.0 > scores[1][" yes"]
    for a, b in zip(scores[:3], scores[3:6]):  # the same figures whatever shares the batch
        assert a == pytest.approx(b, abs=1e-3)
    # the candidate scored highest is the token greedy generation picks
    first = "".join(engine.stream_prompt(prompts[2], SamplingParams(max_tokens=1)))
    if first in (" yes", " no"):
        assert max(scores[2], key=scores[2].get) == first
    stats = engine.stats()
    assert stats["requests_finished"]["scored"] == finished + 12
    assert stats["running"] == 0 and stats["kv_cells_used"] == 0
    with pytest.raises(PromptTooLongError):
        engine.next_token_logprobs(["word " * 600], [" yes"])


def _reference_logprobs(model_path, prompt: str, continuation: str) -> list[float]:
    """What llama-cpp-python's high-level Llama gives with logits for every row (the slow, obvious way)."""
    import numpy as np

    llm = high_level_llama(model_path, n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    head = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    tail = llm.tokenize(continuation.encode(), add_bos=False, special=False)
    llm.eval(head + tail)
    rows = np.asarray(llm.scores[: len(head) + len(tail)], dtype=np.float64)
    out = []
    for j, token in enumerate(tail):
        row = rows[len(head) + j - 1]
        out.append(float(row[token] - (row.max() + np.log(np.exp(row - row.max()).sum()))))
    llm.close()
    return out


def test_continuation_logprobs_match_reading_every_row_and_survive_chunked_prompts(smollm2_path):
    """Query likelihood: each continuation token's log-probability, with logits asked for its rows only. A
    small n_batch splits prompt and continuation over several passes; the figures must not change."""
    prompt = "Passage: The canteen serves lunch from noon to three. Visitors sign in at reception.\nQuestion:"
    right, wrong = " When is lunch served in the canteen?", " How many moons does Jupiter have?"
    expected = _reference_logprobs(smollm2_path, prompt, right)
    eng = BatchingEngine(smollm2_path, n_ctx=2048, n_threads=2, max_sequences=4, n_batch=8)
    try:
        eng.warm_up()
        running = eng.stream(chat("Tell me a long story about a dragon."), SamplingParams(max_tokens=40))
        got = eng.continuation_logprobs([prompt, prompt, prompt], [right, wrong, right])
        assert "".join(running), "a generating request shares the passes and still finishes"
        assert len(got[0]) == len(expected) == eng.count_tokens(right)
        assert got[0] == pytest.approx(expected, abs=2e-3)
        assert got[2] == pytest.approx(got[0], abs=1e-3)
        assert sum(got[0]) / len(got[0]) > sum(got[1]) / len(got[1]), "the question the passage answers is likelier"
        stats = eng.stats()
        assert stats["running"] == 0 and stats["kv_cells_used"] == 0
        with pytest.raises(ValueError, match="continuations"):
            eng.continuation_logprobs([prompt], [right, wrong])
        with pytest.raises(ValueError, match="no tokens"):
            eng.continuation_logprobs([prompt], [""])
        with pytest.raises(PromptTooLongError):
            eng.continuation_logprobs(["word " * 600], [right])
    finally:
        eng.close()


def test_a_shared_system_prompt_is_read_once_and_outputs_do_not_change(engine):
    system = "You answer questions about the staff handbook. Be brief, polite and precise. " * 4
    def ask(q: str) -> list[dict]:
        return [{"role": "system", "content": system}, {"role": "user", "content": q}]

    solo = [engine.generate(ask(q), GREEDY).text for q in QUESTIONS[:4]]  # alone: nothing to reuse
    reused = engine.stats()["prompt_tokens_reused_total"]
    first = engine.stream(ask(QUESTIONS[0]), GREEDY)
    it = iter(first)
    next(it)  # its prompt is in the KV cache now
    others = [engine.stream(ask(q), GREEDY) for q in QUESTIONS[1:4]]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(consume, others))
    list(it)
    assert [s.completion.text for s in [first, *others]] == solo
    shared = engine.count_tokens(system)
    assert all(s.completion.extra.get("cached_tokens", 0) >= shared for s in others)
    assert engine.stats()["prompt_tokens_reused_total"] - reused >= 3 * shared
    assert engine.stats()["kv_cells_used"] == 0


def test_every_forward_pass_runs_on_the_decode_thread(smollm2_path, monkeypatch):
    """libgomp keeps a thread team per calling thread; a second team made each token 25% slower (docs/serving.md)."""
    import threading

    import serving.engine as engine_module

    callers: set[str] = set()
    real = engine_module.llama_cpp.llama_decode

    def recording(ctx, batch):
        callers.add(threading.current_thread().name)
        return real(ctx, batch)

    monkeypatch.setattr(engine_module.llama_cpp, "llama_decode", recording)
    eng = BatchingEngine(smollm2_path, n_ctx=1024, n_threads=2, max_sequences=2, n_batch=128)
    try:
        eng.warm_up()
        done = eng.generate([{"role": "user", "content": "Hello"}], SamplingParams(max_tokens=4, temperature=0.0))
        assert done.completion_tokens > 0
        eng.next_token_logprobs(["Is the sky blue?"], ["yes", "no"])
    finally:
        eng.close()
    assert callers == {f"engine-{eng.model_id}"}


def _libgomp_settings(env_extra: dict[str, str]) -> str:
    """What llama.cpp's libgomp reports reading, in a fresh process that imports the engine."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(OMP_DISPLAY_ENV="verbose", **env_extra)
    done = subprocess.run([sys.executable, "-c", "import serving.engine"], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=120, check=True)
    return done.stderr


def test_libgomp_loads_with_the_engines_wait_policy_and_the_users_wins():
    """The wait policy must reach libgomp before it is loaded (serving/__init__.py); a user's choice is kept."""
    ours = _libgomp_settings({})
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in ours
    assert "GOMP_SPINCOUNT = '300000'" in ours
    theirs = _libgomp_settings({"OMP_WAIT_POLICY": "passive"})
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in theirs
    assert "GOMP_SPINCOUNT = '0'" in theirs  # passive means no spinning: our spin count must not creep in


def test_an_idle_engine_does_not_keep_a_core_busy(smollm2_path):
    """Active waiting is bounded: after a request, the llama.cpp threads go to sleep, not spin on."""
    eng = BatchingEngine(smollm2_path, n_ctx=1024, n_threads=2, max_sequences=2, n_batch=128)
    try:
        eng.warm_up()
        eng.generate([{"role": "user", "content": "Hello"}], SamplingParams(max_tokens=8, temperature=0.0))
        time.sleep(0.5)
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        time.sleep(2.0)
        cpu_s = time.process_time() - cpu_before
        wall_s = time.perf_counter() - wall_before
    finally:
        eng.close()
    assert cpu_s < 0.2 * wall_s, f"the idle engine used {cpu_s:.2f} s of CPU in {wall_s:.2f} s"
