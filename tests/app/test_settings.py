"""Settings: defaults, environment (CONSULTA_ prefix, __ nesting), YAML file, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ConfigFileError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("CONSULTA_"):
            monkeypatch.delenv(k)


def test_defaults():
    s = load_settings()
    assert s.data_dir == Path("data") and s.serving.model == "qwen2.5-coder-1.5b"
    assert s.index_dir == Path("data/index")


def test_environment_with_nested_sections(monkeypatch):
    monkeypatch.setenv("CONSULTA_SERVING__N_GPU_LAYERS", "-1")
    monkeypatch.setenv("CONSULTA_RETRIEVAL__K", "7")
    monkeypatch.setenv("CONSULTA_DATA_DIR", "/srv/consulta")
    s = load_settings()
    assert s.serving.n_gpu_layers == -1 and s.retrieval.k == 7 and s.data_dir == Path("/srv/consulta")


def test_yaml_file_and_environment_wins(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("serving:\n  max_sequences: 6\n  model: qwen2.5-coder-0.5b\nretrieval:\n  k: 3\n")
    monkeypatch.setenv("CONSULTA_RETRIEVAL__K", "9")
    s = load_settings(f)
    assert s.serving.max_sequences == 6 and s.serving.model == "qwen2.5-coder-0.5b"
    assert s.retrieval.k == 9


def test_missing_yaml_file_is_named(tmp_path):
    with pytest.raises(ConfigFileError, match="nope.yaml"):
        load_settings(tmp_path / "nope.yaml")


def test_api_url_variable_reaches_the_ui_settings(monkeypatch):
    monkeypatch.setenv("CONSULTA_API_URL", "http://10.0.0.5:9000")
    assert load_settings().ui.api_url == "http://10.0.0.5:9000"


def test_an_unknown_fusion_is_named_with_its_choices(monkeypatch):
    monkeypatch.setenv("CONSULTA_RETRIEVAL__FUSION", "borda")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"retrieval\.fusion\s+Input should be 'score' or 'rrf'"):
        load_settings()
    monkeypatch.setenv("CONSULTA_RETRIEVAL__FUSION", "rrf")
    assert load_settings().retrieval.fusion == "rrf"
