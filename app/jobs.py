"""Ingestion jobs: an upload becomes a job that one background worker runs; its status lives in SQLite.

Status goes queued -> running -> done | failed; `files` holds each file's outcome (ingested, unchanged,
failed with the reason), `progress` how many of the files were read. A job left queued or running by a
process that stopped is marked failed when the next one starts.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.db import Database, new_id, now
from app.errors import NotFoundError

logger = logging.getLogger(__name__)

IngestFn = Callable[..., Any]  # (paths, collection, progress=...) -> IngestReport


class IngestJobs:
    def __init__(self, db: Database, ingest: IngestFn, *, on_finish: Callable[[dict], None] | None = None) -> None:
        self.db = db
        self._ingest = ingest
        self._on_finish = on_finish
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._done = threading.Condition()
        with self.db.write() as conn:
            conn.execute("UPDATE jobs SET status = 'failed', error = 'interrupted: the API stopped before it "
                         "finished; upload again', finished_at = ? WHERE status IN ('queued', 'running')", (now(),))

    def submit(self, collection: str, paths: list[Path], *, user_id: int | None,
               rejected: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Queue `paths` for ingestion into `collection`; files already refused are recorded as failed."""
        job_id = new_id()
        files = [{"source": p.name, "path": str(p), "status": "queued", "chunks": 0, "pages": None, "error": None}
                 for p in paths] + [{**r, "path": None} for r in (rejected or [])]
        status = "queued" if paths else "failed"
        with self.db.write() as conn:
            conn.execute("INSERT INTO jobs(id, user_id, collection, status, files, result, error, created_at, "
                         "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (job_id, user_id, collection, status, json.dumps(files),
                          json.dumps({"progress": {"done": 0, "total": len(paths)}}),
                          None if paths else "no file could be accepted", now(), None if paths else now()))
        if paths:
            self._start()
            self._queue.put(job_id)
        return self.get(job_id)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="ingest-jobs", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            try:
                self._run(job_id)
            except Exception as e:  # noqa: BLE001 - the job records it; the worker goes on
                logger.exception("ingestion job %s failed", job_id)
                self._update(job_id, status="failed", error=f"ingestion failed: {e}", finished_at=now())
            with self._done:
                self._done.notify_all()
            job = self.get(job_id)
            if self._on_finish is not None:
                self._on_finish(job)

    def _run(self, job_id: str) -> None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        files = json.loads(row["files"])
        paths = [Path(f["path"]) for f in files if f["status"] == "queued"]
        self._update(job_id, status="running", started_at=now())

        def progress(name: str, done: int, total: int) -> None:
            self._update(job_id, result={"progress": {"done": done, "total": total}})

        report = self._ingest(paths, row["collection"], progress=progress)
        by_path = {str(Path(r.source).resolve()): r for r in report.files}
        for f in files:
            r = by_path.get(str(Path(f["path"]).resolve())) if f["path"] else None
            if r is None:
                continue
            error = r.error.replace(f"{Path(r.source).parent}/", "") if r.error else None  # no server paths
            f.update(status=r.status, chunks=r.chunks, pages=r.pages, error=error)
            if r.status == "failed":
                Path(r.source).unlink(missing_ok=True)
        self._update(job_id, status="done", files=files, finished_at=now(),
                     result={"progress": {"done": len(paths), "total": len(paths)},
                             "chunks_added": report.chunks_added, "total_chunks": report.total_chunks})

    def _update(self, job_id: str, **fields: Any) -> None:
        sets, args = [], []
        for k, v in fields.items():
            if k == "result":
                with self.db.read() as conn:
                    old = json.loads(conn.execute("SELECT result FROM jobs WHERE id = ?", (job_id,))
                                     .fetchone()["result"] or "{}")
                v = json.dumps({**old, **v})
            elif k == "files":
                v = json.dumps(v)
            sets.append(f"{k} = ?")
            args.append(v)
        with self.db.write() as conn:
            conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*args, job_id))  # noqa: S608

    def get(self, job_id: str) -> dict[str, Any]:
        with self.db.read() as conn:
            row = conn.execute("SELECT j.*, u.username FROM jobs j LEFT JOIN users u ON u.id = j.user_id "
                               "WHERE j.id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no ingestion job {job_id}")
        return _job(row)

    def list(self, *, user_id: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        sql = "SELECT j.*, u.username FROM jobs j LEFT JOIN users u ON u.id = j.user_id"
        args: tuple = ()
        if user_id is not None:
            sql += " WHERE j.user_id = ?"
            args = (user_id,)
        with self.db.read() as conn:
            rows = conn.execute(sql + " ORDER BY j.created_at DESC, j.rowid DESC LIMIT ?", (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job once it is done or failed, or as it is after `timeout` seconds."""
        with self._done:
            self._done.wait_for(lambda: self.get(job_id)["status"] in ("done", "failed"), timeout=timeout)
        return self.get(job_id)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)


def _job(row) -> dict[str, Any]:
    result = json.loads(row["result"] or "{}")
    files = [{k: v for k, v in f.items() if k != "path"} for f in json.loads(row["files"])]
    return {"job_id": row["id"], "status": row["status"], "collection": row["collection"], "user": row["username"],
            "files": files, "progress": result.get("progress", {"done": 0, "total": 0}),
            "chunks_added": result.get("chunks_added", 0), "total_chunks": result.get("total_chunks", 0),
            "error": row["error"], "created_at": row["created_at"], "started_at": row["started_at"],
            "finished_at": row["finished_at"]}
