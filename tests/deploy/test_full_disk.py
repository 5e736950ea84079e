"""A full disk under the data dir: a clear one-line error, and the index that was there stays whole and searchable.

The data dir is a 320 KB tmpfs (mounting one needs root, which our CI machines have; elsewhere the test is skipped with
the reason). The first ingest fits; the second cannot, and must fail cleanly mid-write.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.fixture()
def tiny_disk(tmp_path: Path):
    mnt = tmp_path / "data"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_ingest_on_a_full_disk_fails_clearly_and_keeps_the_previous_index(tiny_disk, base_env, tmp_path):
    env = {**base_env, "CONSULTA_DATA_DIR": str(tiny_disk)}
    first = tmp_path / "first"
    first.mkdir()
    (first / "leave.md").write_text("# Leave\n\nStaff get 25 days of annual leave a year.\n", encoding="utf-8")
    r = run_cli(["ingest", str(first), "--json"], env)
    assert r.returncode == 0, r.stderr

    big = tmp_path / "big"
    big.mkdir()
    rng = random.Random(1)
    words = "policy staff travel budget meeting report archive finance contract office training safety".split()
    for i in range(8):  # ~500 KB of index data: more than the disk holds
        paras = (" ".join(rng.choice(words) for _ in range(120)) for _ in range(15))
        (big / f"doc{i}.md").write_text("\n\n".join(paras), encoding="utf-8")
    r = run_cli(["ingest", str(big), "--json"], env)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "could not write the index" in r.stderr and "No space left on device" in r.stderr, r.stderr[-2000:]
    assert "previous index is intact" in r.stderr

    # what was there before is whole: listed, searchable, no half-written generation left behind
    listed = json.loads(run_cli(["docs", "list", "--json"], env).stdout)["documents"]
    assert [Path(d["source"]).name for d in listed] == ["leave.md"]
    r = run_cli(["search", "how many days of annual leave", "--json"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["hits"][0]["source"].endswith("leave.md")
    assert not list((tiny_disk / "index").glob(".tmp-*"))
