"""`consulta users ...` as an admin runs it (typer's CliRunner, a real database in tmp_path)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import cli


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSULTA_DATA_DIR", str(tmp_path))
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        return result

    return invoke


def test_create_admin_prints_the_secrets_once_and_they_work(run, tmp_path):
    from app.container import Services
    from app.settings import Settings

    out = json.loads(run("users", "create-admin", "--json").stdout)
    assert out["username"] == "admin" and len(out["password"]) >= 12 and out["api_key"].startswith("csk_")
    assert "nothing done" in run("users", "create-admin", "--if-none").stderr
    services = Services(Settings(data_dir=tmp_path))
    assert services.access.login("admin", out["password"])[1].role == "admin"
    assert services.access.authenticate(out["api_key"]).is_admin
    db = (tmp_path / "consulta.db").read_bytes()
    assert out["password"].encode() not in db and out["api_key"].encode() not in db  # stored hashed only


def test_users_groups_and_grants_from_the_cli(run, tmp_path):
    from app.container import Services
    from app.settings import Settings

    run("users", "create-admin", "--password", "admin-passphrase")
    created = json.loads(run("users", "create", "bea", "--role", "editor", "--json").stdout)
    assert created["role"] == "editor" and created["password"]
    run("users", "group", "hr", "--add", "bea")
    run("users", "grant", "payroll", "--permission", "write", "--group", "hr")
    run("users", "grant", "handbook", "--user", "bea")
    grants = json.loads(run("users", "grants", "--json").stdout)["grants"]
    assert {"collection": "payroll", "permission": "write", "group": "hr"} in grants
    p = Services(Settings(data_dir=tmp_path)).access.principal("bea")
    assert p.can_write("payroll") and p.can_read("handbook") and not p.can_write("handbook")
    assert not p.can_read("finance")
    key = run("users", "key", "bea").stdout.strip()
    assert Services(Settings(data_dir=tmp_path)).access.authenticate(key).username == "bea"
    audit = json.loads(run("users", "audit", "--action", "grant.", "--json").stdout)["entries"]
    assert {e["collection"] for e in audit} == {"payroll", "handbook"}


def test_the_last_admin_cannot_be_demoted(run):
    run("users", "create-admin", "--password", "admin-passphrase")
    with pytest.raises(Exception, match="no active admin"):
        run("users", "set", "admin", "--role", "reader")
