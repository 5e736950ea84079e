"""kill -9 a real `consulta ingest` mid-run: the previous index still loads, whole and consistent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from retrieval.store import FaissStore
from tests.conftest import REPO, run_cli

PARAGRAPH = ("Section {i}. Procedure {i} of the records office: files of series {i} are kept for {y} years, "
             "then reviewed by the archivist, who decides whether they are destroyed or moved to the historical "
             "archive. Requests to consult series {i} go to desk {d} and are answered within {d} working days. ")


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (the parse workers of an ingest)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_kill_9_mid_ingest_leaves_the_previous_index_loadable_and_consistent(base_env, tmp_path):
    env = {**base_env, "CONSULTA_DATA_DIR": str(tmp_path / "data")}
    first = tmp_path / "first"
    first.mkdir()
    (first / "parking.md").write_text("# Parking\n\nThe staff car park closes at 22:00 every day.")
    r = run_cli(["ingest", str(first), "--json"], env)
    assert r.returncode == 0, r.stderr
    index = tmp_path / "data" / "index"
    before = FaissStore(index).load()
    before_chunks = [(c.id, c.text) for c in before.chunks()]

    many = tmp_path / "many"
    many.mkdir()
    for n in range(30):
        (many / f"series-{n:02d}.md").write_text(f"# Series {n}\n\n" + "\n\n".join(
            PARAGRAPH.format(i=n * 10 + k, y=5 + k, d=k + 1) * 2 for k in range(3)))
    proc = subprocess.Popen([sys.executable, "-m", "consulta", "ingest", str(many), str(first), "--json"], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        workers = children(proc.pid)
    assert workers, "the ingest never started parsing"
    time.sleep(2.0)  # parsing done, embedding the first files into the unpublished generation
    assert proc.poll() is None, "the ingest finished before it could be killed; give it more files"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    after = FaissStore(index).load()  # raises if vectors, chunks or manifest disagree
    assert after.generation == before.generation
    assert [(c.id, c.text) for c in after.chunks()] == before_chunks
    assert after.documents() == before.documents()
    hits = after.search_sparse("car park closes", 3)
    assert [h.chunk.text for h in hits] == [before_chunks[0][1]], "BM25 of the same generation"
    vector = after._vectors[0]
    assert after.search(vector, 1)[0].chunk.id == before_chunks[0][0]

    deadline = time.monotonic() + 10  # the orphaned parse workers notice their parent is gone and exit
    while any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split(")")[1][:3]
              for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    for w in workers:
        if Path(f"/proc/{w}").exists():
            os.kill(w, signal.SIGKILL)

    (first / "badges.md").write_text("# Badges\n\nLost badges are replaced at the front desk.")
    r = run_cli(["ingest", str(first), "--json"], env)  # the lock died with the process: the next run works
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total_chunks"] == len(before_chunks) + 1
    assert not list(index.glob(".tmp-*")), "the killed run's half-written generation is cleaned up"
