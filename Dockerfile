# syntax=docker/dockerfile:1
# One image for the API (engine in-process) and the UI. It runs the same scripts/install.sh as `make install`,
# `make test` and CI, so what the tests cover is what the image does.
#
#   CPU:  docker compose up --build
#   GPU:  docker compose --profile gpu up --build   (builds llama-cpp-python with CUDA; see docker-compose.yml)
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# CONSULTA_CUDA=1 builds llama.cpp with CUDA (GPU offload); EXTRA_APT adds the packages a CUDA base image lacks.
ARG CONSULTA_CUDA=0
ARG EXTRA_APT=""
# The CPU build of torch (the embedders run on the CPU); PyPI's default Linux wheel is a multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PYTHON=python3
# Extra CMake flags for llama.cpp (the gpu profile sets -DGGML_NATIVE=OFF: no GPU is visible while an image builds).
ARG CMAKE_ARGS=""

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    CONSULTA_DATA_DIR=/data \
    HF_HUB_OFFLINE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git ca-certificates ${EXTRA_APT} \
    && rm -rf /var/lib/apt/lists/*

# A non-root user owns the data and models volumes.
RUN useradd --create-home --uid 10001 consulta \
    && mkdir -p /data/models /opt/venv \
    && chown -R consulta:consulta /data /opt/venv

WORKDIR /app
COPY --chown=consulta:consulta . /app
USER consulta

RUN CONSULTA_CUDA=${CONSULTA_CUDA} CMAKE_ARGS="${CMAKE_ARGS}" TORCH_INDEX_URL=${TORCH_INDEX_URL} PYTHON=${PYTHON} bash scripts/install.sh

VOLUME ["/data"]
EXPOSE 8000 8501
CMD ["bash", "scripts/container.sh", "api"]
