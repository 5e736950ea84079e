"""`consulta ingest --prune` and `consulta sync` through the real command line."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_prune_and_sync_remove_deleted_files_per_collection(base_env, tmp_path):
    env = {**base_env, "CONSULTA_DATA_DIR": str(tmp_path / "data")}
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "parking.md").write_text("# Parking\n\nThe parking lot closes at 22:00.")
    (docs / "lunch.md").write_text("# Lunch\n\nLunch is served from 12:30 in the canteen.")
    (docs / "badges.txt").write_text("The badge office is on floor 2.")
    for collection in ("hr", "other"):
        r = run_cli(["ingest", str(docs), "--collection", collection, "--json"], env)
        assert r.returncode == 0, r.stderr
    (docs / "lunch.md").unlink()

    r = run_cli(["ingest", str(docs), "--collection", "hr", "--prune", "--json"], env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [s.rsplit("/", 1)[-1] for s in out["removed"]] == ["lunch.md"]
    assert {f["status"] for f in out["files"]} == {"unchanged"} and out["collection"] == "hr"
    assert {"files", "chunks_added", "total_chunks", "failed", "seconds", "timings"} <= set(out)

    def listed() -> set[tuple[str, str]]:
        r = run_cli(["docs", "list", "--json"], env)
        return {(d["collection"], d["source"].rsplit("/", 1)[-1]) for d in json.loads(r.stdout)["documents"]}

    assert listed() == {("hr", "parking.md"), ("hr", "badges.txt"),
                        ("other", "parking.md"), ("other", "lunch.md"), ("other", "badges.txt")}

    r = run_cli(["sync", str(docs), "--collection", "other"], env)
    assert r.returncode == 0, r.stderr
    assert "1 removed" in r.stderr
    assert ("other", "lunch.md") not in listed()


def test_sync_adds_new_reindexes_changed_and_removes_deleted_files(base_env, tmp_path):
    env = {**base_env, "CONSULTA_DATA_DIR": str(tmp_path / "data")}
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "parking.md").write_text("# Parking\n\nThe parking lot closes at 22:00.")
    (docs / "lunch.md").write_text("# Lunch\n\nLunch is served from 12:30 in the canteen.")
    (docs / "badges.txt").write_text("The badge office is on floor 2.")
    assert run_cli(["sync", str(docs)], env).returncode == 0
    (docs / "lunch.md").write_text("# Lunch\n\nLunch is served from 13:00 to 15:00 in the canteen.")
    (docs / "badges.txt").unlink()
    (docs / "keys.md").write_text("# Keys\n\nSpare keys are kept by the porter.")

    r = run_cli(["sync", str(docs), "--json"], env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    status = {f["source"].rsplit("/", 1)[-1]: f["status"] for f in out["files"]}
    assert status == {"parking.md": "unchanged", "lunch.md": "ingested", "keys.md": "ingested"}
    assert [s.rsplit("/", 1)[-1] for s in out["removed"]] == ["badges.txt"]
    r = run_cli(["search", "When is lunch served?", "--json", "--k", "5"], env)
    texts = [h["text"] for h in json.loads(r.stdout)["hits"]]
    assert any("13:00" in t for t in texts) and not any("12:30" in t for t in texts)
    assert not any("badge office" in t for t in texts) and len(texts) == 3
