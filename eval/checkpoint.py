"""What a run has finished so far, on disk, so that a killed run can be resumed (`consulta eval run --resume`).

One JSONL file per run under `<data_dir>/eval/checkpoints/<key>.jsonl`; the key covers what makes two runs'
rows interchangeable: the dataset, its sampled question ids, the configs and the settings that shape an
answer, k, noise and seed. The first line describes the run; every later line is a whole row as it stood
when one stage of it finished (answered, noise pass, judged), appended and flushed at once. A later line
for the same config and question replaces an earlier one. A line cut short by a kill is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.settings import Settings

logger = logging.getLogger(__name__)

# settings that change how fast an answer comes, not what it says
_SPEED_ONLY = {"serving": {"n_threads", "n_gpu_layers", "n_batch", "max_queue", "flash_attn", "prefix_reuse",
                           "request_timeout_s", "remote_api_key"},
               "ingest": {"parse_workers", "parse_timeout_s", "parse_memory_mb"}}


def answer_settings(s: Settings) -> dict[str, Any]:
    """The settings sections that shape a row (ingest, retrieval, serving, assistant), less speed-only fields."""
    out = {}
    for section in ("ingest", "retrieval", "serving", "assistant"):
        values = getattr(s, section).model_dump(mode="json")
        out[section] = {k: v for k, v in values.items() if k not in _SPEED_ONLY.get(section, set())}
    return out


def run_key(description: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _json_default(o: Any) -> Any:
    return o.item() if hasattr(o, "item") else str(o)  # numpy scalars


class Checkpoint:
    """The finished rows of one run. `open` with resume=False starts the file afresh."""

    def __init__(self, path: Path, description: dict[str, Any], rows: dict[tuple[str, str], dict[str, Any]],
                 resumed: bool = False) -> None:
        self.path = path
        self.description = description
        self.resumed = resumed  # an earlier run's file was found and is being continued
        self._rows = rows
        self.reused = 0  # rows taken from the file instead of asked again
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8")

    @classmethod
    def open(cls, folder: Path, description: dict[str, Any], *, resume: bool) -> Checkpoint:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{run_key(description)}.jsonl"
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        resumed = resume and path.is_file()
        if resumed:
            rows = _read(path)
        else:
            if resume:
                logger.warning("no checkpoint of this run to resume (%s): starting afresh", path.name)
            path.write_text(json.dumps({"checkpoint": 1, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                                        **description}, ensure_ascii=False, default=_json_default) + "\n",
                            encoding="utf-8")
        return cls(path, description, rows, resumed)

    def rows(self, config: str) -> dict[str, dict[str, Any]]:
        """The rows already in the file for `config`, by question id."""
        return {qid: row for (c, qid), row in self._rows.items() if c == config}

    def write(self, row: dict[str, Any], stage: str) -> None:
        """Appends the row as it stands after `stage` and flushes it to the operating system."""
        line = json.dumps({"config": row["config"], "id": row["id"], "stage": stage, "row": row},
                          ensure_ascii=False, default=_json_default)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _read(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest row per (config, question id); a torn last line is cut off so that appends start clean."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("%s: dropping an unfinished last line (%d bytes)", path.name, len(data) - end)
        with path.open("r+b") as f:
            f.truncate(end)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for line in data[:end].decode("utf-8", "replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("row"), dict):
            rows[(str(record["config"]), str(record["id"]))] = record["row"]
    return rows


def describe(dataset_path: Path, documents: Path | None, ids: Sequence[str], configs: Sequence[Any], *, k: int,
             noise: int, seed: int) -> dict[str, Any]:
    """What identifies a run's rows: the checkpoint's first line and the source of its key."""
    return {"dataset": str(Path(dataset_path).resolve()),
            "documents": str(Path(documents).resolve()) if documents else None,
            "questions": len(ids), "ids_sha": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
            "configs": [{"name": c.name, "settings": answer_settings(c.settings)} for c in configs],
            "k": k, "noise": noise, "seed": seed}
