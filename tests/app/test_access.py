"""Users, roles and collection access through the real API over HTTP (a `consulta serve` process).

Two users, two collections: the reader may read 'demo' (through a group) and not 'vault'; the editor may
write 'vault'. A reader never receives, is cited, or learns the existence of a 'vault' passage.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, ADMIN_USER

SECRET = "The vault combination is 4417-ZEBRA and the spare key is kept in room B12."
TIMEOUT = 300


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def world(api_server, api_admin_key):
    """Admin makes an editor and a reader; the editor uploads a secret into 'vault'."""
    admin = httpx.Client(base_url=api_server, headers=bearer(api_admin_key), timeout=TIMEOUT)
    tag = uuid.uuid4().hex[:6]
    reader, editor = f"rita{tag}", f"ed{tag}"
    r = admin.post("/v1/users", json={"username": reader, "role": "reader"})
    assert r.status_code == 201, r.text
    reader_password = r.json()["password"]  # generated, shown once
    assert admin.post("/v1/users", json={"username": editor, "role": "editor",
                                         "password": "editor-passphrase"}).status_code == 201
    assert admin.post("/v1/groups", json={"name": f"staff{tag}"}).status_code == 201
    assert admin.put(f"/v1/groups/staff{tag}/members/{reader}").status_code == 200
    assert admin.post("/v1/grants", json={"collection": "demo", "permission": "read",
                                          "group": f"staff{tag}"}).status_code == 201
    assert admin.post("/v1/grants", json={"collection": "vault", "permission": "write",
                                          "user": editor}).status_code == 201
    ed_token = httpx.post(f"{api_server}/v1/auth/login", json={"username": editor,
                                                               "password": "editor-passphrase"}).json()["token"]
    ed = httpx.Client(base_url=api_server, headers=bearer(ed_token), timeout=TIMEOUT)
    r = ed.post("/v1/documents", data={"collection": "vault"}, params={"wait": True},
                files=[("files", ("vault-procedures.md", f"# Vault\n\n{SECRET}\n".encode(), "text/markdown"))])
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    r = httpx.post(f"{api_server}/v1/auth/login", json={"username": reader, "password": reader_password})
    assert r.status_code == 200, r.text
    rita = httpx.Client(base_url=api_server, headers=bearer(r.json()["token"]), timeout=TIMEOUT)
    yield {"admin": admin, "ed": ed, "rita": rita, "reader": reader, "editor": editor, "url": api_server}
    for c in (admin, ed, rita):
        c.close()


def test_without_a_credential_the_api_answers_401(api_server):
    for method, path in (("GET", "/v1/collections"), ("POST", "/v1/search"), ("GET", "/v1/documents")):
        r = httpx.request(method, api_server + path, json={"query": "x"} if method == "POST" else None)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["type"] == "unauthorized"
    r = httpx.get(f"{api_server}/v1/collections", headers=bearer("csk_not-a-real-key"))
    assert r.status_code == 401


def test_wrong_password_is_refused_and_audited(world):
    r = httpx.post(f"{world['url']}/v1/auth/login", json={"username": world["reader"], "password": "wrong-one!"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "wrong user name or password"
    entries = world["admin"].get("/v1/audit", params={"action": "login.failed", "user": world["reader"]}).json()
    assert entries["entries"], "a failed login leaves no trace in the audit log"


def test_reader_lists_only_the_collections_they_may_read(world):
    rita, admin = world["rita"], world["admin"]
    assert [c["name"] for c in rita.get("/v1/collections").json()["collections"]] == ["demo"]
    assert {"demo", "vault"} <= {c["name"] for c in admin.get("/v1/collections").json()["collections"]}
    docs = rita.get("/v1/documents").json()["documents"]
    assert docs and {d["collection"] for d in docs} == {"demo"}
    assert rita.get("/v1/documents", params={"collection": "vault"}).json()["documents"] == []
    me = rita.get("/v1/auth/me").json()
    assert me["readable"] == ["demo"] and me["writable"] == [] and me["user"]["role"] == "reader"


def test_reader_search_and_answer_never_touch_a_collection_they_lack(world):
    rita, ed = world["rita"], world["ed"]
    hits = rita.post("/v1/search", json={"query": "vault combination spare key room B12", "k": 10}).json()["hits"]
    assert hits and all("4417" not in h["text"] and "vault" not in h["source"] for h in hits)
    answer = rita.post("/v1/ask", json={"question": "What is the vault combination?"}).json()
    seen = json.dumps(answer)
    assert "4417" not in seen and "vault-procedures" not in seen
    # the editor, who may read 'vault', gets the secret passage for the same question
    hits = ed.post("/v1/search", json={"query": "vault combination spare key room B12", "k": 3}).json()["hits"]
    assert "4417" in hits[0]["text"]


def test_a_collection_the_reader_lacks_looks_like_one_that_does_not_exist(world):
    rita = world["rita"]
    lacked = rita.post("/v1/ask", json={"question": "What is the vault combination?", "collection": "vault"})
    missing = rita.post("/v1/ask", json={"question": "What is the vault combination?", "collection": "nope"})
    assert lacked.status_code == missing.status_code == 404
    assert lacked.json()["error"]["message"].replace("vault", "X") == missing.json()["error"]["message"].replace(
        "nope", "X")


def test_reader_cannot_change_documents_or_administer(world):
    rita, admin = world["rita"], world["admin"]
    vault_doc = next(d for d in admin.get("/v1/documents", params={"collection": "vault"}).json()["documents"])
    assert rita.delete(f"/v1/documents/{vault_doc['document_id']}").status_code == 404  # not even its existence
    r = rita.post("/v1/documents", data={"collection": "demo"},
                  files=[("files", ("x.md", b"# x\n\nx", "text/markdown"))])
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
    for path in ("/v1/users", "/v1/audit", "/v1/grants"):
        assert rita.get(path).status_code == 403


def test_editor_writes_only_where_granted(world):
    r = world["ed"].post("/v1/documents", data={"collection": "demo"},
                         files=[("files", ("note.md", b"# Note\n\nA note.", "text/markdown"))])
    assert r.status_code == 403 and "demo" in r.json()["error"]["message"]


def test_audit_log_says_who_asked_what_where_and_who_ingested(world):
    admin, reader, editor = world["admin"], world["reader"], world["editor"]
    asks = admin.get("/v1/audit", params={"user": reader, "action": "ask"}).json()["entries"]
    assert any(e["detail"]["question"] == "What is the vault combination?" for e in asks)
    ingests = admin.get("/v1/audit", params={"action": "document.", "collection": "vault"}).json()["entries"]
    actions = {(e["user"], e["action"]) for e in ingests}
    assert (editor, "document.upload") in actions and (editor, "document.ingest") in actions


def test_citation_link_opens_the_file_without_a_header_and_only_for_its_user(world):
    ed, url = world["ed"], world["url"]
    answer = ed.post("/v1/ask", json={"question": "Where is the spare key kept?", "collection": "vault"}).json()
    source = (answer["citations"] or answer["usage"]["sources"])[0]
    assert source["url"].startswith(f"/v1/documents/{source['document_id']}/file?")
    r = httpx.get(url + source["url"])  # no Authorization header: the link is signed
    assert r.status_code == 200 and SECRET in r.text
    assert r.headers["content-type"].startswith("text/plain")
    tampered = source["url"].replace("sig=", "sig=0")
    assert httpx.get(url + tampered).status_code == 401
    assert world["rita"].get(f"/v1/documents/{source['document_id']}/file").status_code == 404


@pytest.mark.parametrize("name", ["../../escape-{tag}.md", "/tmp/escape-{tag}.md", "..\\..\\escape-{tag}.md",
                                  "sub/../../escape-{tag}.md"])
def test_upload_names_cannot_climb_out_of_the_data_dir(world, api_env, name):
    tag = uuid.uuid4().hex[:8]
    name = name.format(tag=tag)
    data_dir = Path(api_env["CONSULTA_DATA_DIR"])
    r = world["ed"].post("/v1/documents", data={"collection": "vault"}, params={"wait": True},
                         files=[("files", (name, b"# Escape\n\nThis file tried to escape.", "text/markdown"))])
    assert r.status_code == 200, r.text
    assert r.json()["files"][0]["status"] == "ingested"
    written = list(data_dir.rglob(f"escape-{tag}.md"))
    assert written == [data_dir / "uploads" / "vault" / f"escape-{tag}.md"]
    for outside in (data_dir.parent / f"escape-{tag}.md", data_dir.parent.parent / f"escape-{tag}.md",
                    Path(f"/tmp/escape-{tag}.md")):
        assert not outside.exists()


def test_upload_refuses_bad_types_hidden_names_bad_collections_and_big_files(world):
    ed = world["ed"]
    r = ed.post("/v1/documents", data={"collection": "vault"}, params={"wait": True},
                files=[("files", ("tool.exe", b"MZ", "application/octet-stream")),
                       ("files", (".env", b"SECRET=1", "text/plain")),
                       ("files", ("ok.txt", b"Plain text that is fine.", "text/plain"))])
    by_name = {f["source"]: f for f in r.json()["files"]}
    assert "not accepted" in by_name["tool.exe"]["error"] and by_name[".env"]["status"] == "failed"
    assert by_name["ok.txt"]["status"] == "ingested"
    r = ed.post("/v1/documents", data={"collection": "../vault"}, files=[("files", ("a.md", b"# a", "text/markdown"))])
    assert r.status_code == 400 and "collection name" in r.json()["error"]["message"]
    big = b"x" * (1024 * 1024 + 10)  # the test server's limit is 1 MB
    r = ed.post("/v1/documents", data={"collection": "vault"}, files=[("files", ("big.txt", big, "text/plain"))])
    assert r.status_code == 413 and "larger than 1 MB" in r.json()["error"]["message"]


def test_upload_becomes_a_job_whose_status_can_be_followed(world):
    ed, rita = world["ed"], world["rita"]
    r = ed.post("/v1/documents", data={"collection": "vault"},
                files=[("files", ("later.md", b"# Later\n\nIngested in the background.", "text/markdown"))])
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running")
    job_id = r.json()["job_id"]
    for _ in range(600):
        job = ed.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            break
        import time

        time.sleep(0.2)
    assert job["status"] == "done" and job["files"][0]["status"] == "ingested" and job["progress"]["done"] == 1
    assert job_id in {j["job_id"] for j in ed.get("/v1/jobs").json()["jobs"]}
    assert rita.get(f"/v1/jobs/{job_id}").status_code == 404


def test_first_admin_password_from_the_cli_logs_in(world):
    r = httpx.post(f"{world['url']}/v1/auth/login", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
    assert r.status_code == 200 and r.json()["user"]["role"] == "admin"
    token = r.json()["token"]
    assert httpx.post(f"{world['url']}/v1/auth/logout", headers=bearer(token)).status_code == 200
    assert httpx.get(f"{world['url']}/v1/collections", headers=bearer(token)).status_code == 401
