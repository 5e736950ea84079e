#!/usr/bin/env bash
# How the GPU figures in docs/benchmarks/serving.md were taken: on a lent NVIDIA machine that has no package index and takes
# files in pieces of at most 64 MiB per call. On a GPU box of your own, with pip and the network, you need none of
# this: `CONSULTA_CUDA=1 bash scripts/install.sh`, then bench/engine.py with `--n-gpu-layers -1`.
#
#   bash bench/gpu_run.sh pack MODEL DIR          # here: the repacked sdist, the wheels and the GGUF's pieces
#   bash bench/gpu_run.sh start SDIST WHEEL_DIR   # unpack; start both CUDA builds in the background; return
#   bash bench/gpu_run.sh part FILE               # add one piece of the GGUF (pieces are joined in name order)
#   bash bench/gpu_run.sh finish SHA256 OUT_DIR   # join and verify the GGUF, wait for the builds, check the
#                                                 # offload, run bench/engine.py with every layer on the GPU
#
# The two builds, started together, the second at the lowest CPU priority:
#  1. llama-cpp-python with CUDA by the very command scripts/install.sh runs for CONSULTA_CUDA=1 (CMAKE_ARGS,
#     --force-reinstall, --no-cache-dir), with --no-index --no-build-isolation added because the machine has
#     no package index; SDIST is llama-cpp-python's PyPI sdist, repacked without llama.cpp's models/, docs/
#     and the .git folder to fit the transfer;
#  2. llama.cpp's own llama-server from the same sources (bench/setup_llama_server.sh --matched).
# WHEEL_DIR holds the pure-Python wheels the machine lacks (diskcache, which llama-cpp-python imports).
# On the lent H200 (16 cores), 2026-11-30: build 1 took 330 s (CUDA architectures "native" = 90-real), build 2,
# niced and sharing the cores with it, 641 s; a call carrying 55 MB took about 5 s.
set -euo pipefail
W=/tmp/consulta-gpu
REPO="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$W/parts"
stamp() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
progress() {  # the last ninja step of each build
    for f in pip_cuda srv; do
        step="$(grep -o '\[[0-9]*/[0-9]*\]' "$W/$f.log" 2>/dev/null | tail -n 1 || true)"
        done_="$(cat "$W/$f.done" 2>/dev/null || true)"
        stamp "$f: ${step:-no step yet} ${done_:+done: rc, seconds = $done_}"
        [[ -n "$done_" && "${done_%% *}" != 0 ]] && tail -n 15 "$W/$f.log"
    done
    return 0
}

case "${1:-}" in
pack)  # on the machine with pip: DIR gets sdist.tar.gz, whl/ and m00, m01, ... (first piece smaller: it travels
       # with the sdist), each under the 64 MiB a call may carry
    MODEL="$2"; DIR="$3"; mkdir -p "$DIR/whl" "$DIR/tmp"
    python3 -m pip download -q --no-deps --no-binary :all: -d "$DIR/tmp" llama-cpp-python==0.3.36
    python3 -m pip download -q --no-deps --only-binary :all: -d "$DIR/whl" diskcache
    tar -xzf "$DIR"/tmp/llama_cpp_python-0.3.36.tar.gz -C "$DIR/tmp"
    rm -rf "$DIR"/tmp/llama_cpp_python-0.3.36/{.git,vendor/llama.cpp/{models,docs,benches,.github,media}}
    tar -czf "$DIR/sdist.tar.gz" -C "$DIR/tmp" llama_cpp_python-0.3.36 && rm -rf "$DIR/tmp"
    head -c 47185920 "$MODEL" > "$DIR/m00"
    tail -c +47185921 "$MODEL" | split -b 55526768 -d -a 2 --numeric-suffixes=1 - "$DIR/m"
    ls -l "$DIR"; sha256sum "$MODEL"
    exit 0
    ;;
start)
    SDIST="$(readlink -f "$2")"; WHEELS="$(readlink -f "$3")"
    cp "$SDIST" "$W/sdist.tar.gz"
    cp "$REPO/bench/setup_llama_server.sh" "$W/"  # the repo copy may be replaced by the next call
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$W/gpu.txt"
    nvcc --version | tail -n 2; cmake --version | head -n 1; nproc
    python3 -m pip install -q --no-index --no-deps "$WHEELS"/*.whl
    mkdir -p "$W/srv/src" && tar -xzf "$W/sdist.tar.gz" -C "$W/srv/src" --strip-components=1
    setsid nohup bash -c "cd $W; t=\$(date +%s);
        CMAKE_ARGS='-DGGML_CUDA=on' FORCE_CMAKE=1 python3 -m pip install -v --force-reinstall --no-deps \
            --no-cache-dir --no-index --no-build-isolation $W/sdist.tar.gz > $W/pip_cuda.log 2>&1;
        echo \$? \$((\$(date +%s) - t)) > $W/pip_cuda.done" > /dev/null 2>&1 < /dev/null &
    setsid nohup bash -c "cd $W; t=\$(date +%s);
        CMAKE_ARGS='-DGGML_CUDA=on' nice -n 19 bash $W/setup_llama_server.sh --matched $W/srv > $W/srv.log 2>&1;
        echo \$? \$((\$(date +%s) - t)) > $W/srv.done" > /dev/null 2>&1 < /dev/null &
    sleep 15; progress
    ;;
part)
    mv "$2" "$W/parts/"; find "$W/parts" -type f | wc -l; progress
    ;;
finish)
    SHA="$2"; OUT="$3"; mkdir -p "$OUT"
    if ls "$W"/parts/* > /dev/null 2>&1; then cat "$W"/parts/* > "$W/model.gguf" && rm -f "$W"/parts/*; fi
    echo "$SHA  $W/model.gguf" | sha256sum -c
    for _ in $(seq 1 120); do [[ -f "$W/pip_cuda.done" ]] && break; sleep 3; done
    progress
    cp "$W/pip_cuda.log" "$W/gpu.txt" "$OUT/" 2>/dev/null || true
    [[ "$(cut -d' ' -f1 "$W/pip_cuda.done")" == 0 ]] || { tail -n 40 "$W/pip_cuda.log"; exit 1; }
    python3 -m pip show llama_cpp_python 2> /dev/null | sed -n 1,2p
    python3 - "$W/model.gguf" > "$OUT/offload.txt" 2>&1 <<'PY' || true
import sys, time
import llama_cpp
print("llama_supports_gpu_offload:", llama_cpp.llama_supports_gpu_offload())
llm = llama_cpp.Llama(sys.argv[1], n_gpu_layers=-1, n_ctx=2048, verbose=True)
t = time.perf_counter()
out = llm.create_chat_completion([{"role": "user", "content": "What is the capital of Catalonia? One word."}],
                                 max_tokens=16, temperature=0)
print("answer:", out["choices"][0]["message"]["content"], f"({time.perf_counter() - t:.3f} s)")
PY
    grep -E "llama_supports|offload|CUDA0|answer:|using device" "$OUT/offload.txt" | head -n 12
    for _ in $(seq 1 130); do [[ -f "$W/srv.done" ]] && break; sleep 3; done
    progress; cp "$W/srv.log" "$OUT/" 2>/dev/null || true
    SERVER=()
    [[ -x "$W/srv/build/bin/llama-server" ]] && SERVER=(--llama-server-bin "$W/srv/build/bin/llama-server")
    cd "$REPO"
    PYTHONUNBUFFERED=1 python3 bench/engine.py --model "$W/model.gguf" --threads 8 --n-gpu-layers -1 \
        --concurrency 1,4,8,16 --rounds 2 --repeat 2 "${SERVER[@]}" --json > "$OUT/engine_gpu.json" \
        2> "$OUT/engine_gpu.log" || tail -n 30 "$OUT/engine_gpu.log"
    python3 - "$OUT/engine_gpu.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["results"]:
    print(r["concurrency"], r["system"], r["tok_s"], r["ttft_p50_ms"], r["ttft_p95_ms"], r["tpot_p50_ms"],
          r.get("same_text_as_sequential", ""), r.get("engine_python_ms_per_pass", ""))
PY
    ;;
*)
    sed -n 2,16p "$0"; exit 2
    ;;
esac
