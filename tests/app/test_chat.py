"""The ask use-case (app/chat.py) over the real engine, embedder and index (tiny model: mechanics), and the one
answer format that `POST /v1/ask` and `consulta ask --json` share."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.api.schemas import AskResponse, SourcesOut
from app.api.server import create_app
from app.container import Services
from app.errors import ConsultaError, NotFoundError
from app.settings import Settings
from tests.conftest import TINY_MODEL, run_cli

QUESTION = "When are travel expenses reimbursed?"


@pytest.fixture(scope="module")
def services(base_env, tmp_path_factory, corpus_dir):
    # the settings of `base_env`, so that a `consulta` process over the same data dir answers alike
    data = tmp_path_factory.mktemp("chat")
    settings = Settings(data_dir=data, serving={"model": TINY_MODEL, "n_ctx": 4096, "max_sequences": 2,
                                                "max_tokens": 48, "n_threads": 2})
    services = Services(settings)
    services.pipeline.ingest([corpus_dir], "demo")
    services.access.create_user("admin", "admin", "admin-passphrase")
    services.access.create_user("olga", "reader", "olga-passphrase")
    yield services
    services.close()


@pytest.fixture(scope="module")
def admin(services):
    return services.access.principal("admin")


def run(events) -> tuple[list[tuple[str, object]], AskResponse]:
    got = list(events)
    assert got[-1][0] == "done"
    return got, got[-1][1]


def test_without_a_caller_it_answers_and_saves_nothing(services):
    events, done = run(services.chat.ask(QUESTION, collection="demo"))
    names = [e for e, _ in events]
    assert names[0] == "sources" and "token" in names and names.count("done") == 1
    sources = events[0][1]
    assert isinstance(sources, SourcesOut) and sources.conversation_id is None
    assert sources.citations and all(c.url is None for c in sources.citations)
    assert isinstance(done, AskResponse) and done.question == QUESTION and done.answer
    assert done.conversation_id is None and done.message_id is None and done.standalone_question is None
    assert [c.n for c in done.sources] == [c.n for c in sources.citations]
    assert services.audit.query(action="ask") == []


def test_a_callers_answer_is_saved_audited_and_links_to_its_files(services, admin):
    events, done = run(services.chat.ask(QUESTION, caller=admin, collection="demo"))
    sources = events[0][1]
    assert sources.conversation_id and done.conversation_id == sources.conversation_id and done.message_id
    assert all(c.url and c.url.startswith(f"/v1/documents/{c.document_id}/file?u={admin.user_id}&")
               for c in sources.citations)
    history = services.conversations.messages(admin.user_id, done.conversation_id)
    assert [(m.role, m.content) for m in history] == [("user", QUESTION), ("assistant", done.answer)]
    assert history[1].id == done.message_id
    assert history[1].data["citations"] == [c.model_dump() for c in done.citations]
    (row,) = [r for r in services.audit.query(action="ask") if r["target"] == done.conversation_id]
    assert row["user"] == "admin" and row["detail"]["question"] == QUESTION


def test_a_follow_up_is_rewritten_from_its_conversation(services, admin):
    _, first = run(services.chat.ask(QUESTION, caller=admin, collection="demo"))
    _, follow = run(services.chat.ask("And meals abroad?", caller=admin, collection="demo",
                                      conversation_id=first.conversation_id))
    assert follow.conversation_id == first.conversation_id and follow.question == "And meals abroad?"
    # what the tiny model makes of it varies; that it was rewritten does not
    assert follow.standalone_question and follow.standalone_question != "And meals abroad?"
    history = services.conversations.messages(admin.user_id, first.conversation_id)
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[2].data["standalone_question"] == follow.standalone_question


def test_someone_elses_conversation_is_not_found_before_any_event(services, admin):
    _, done = run(services.chat.ask(QUESTION, caller=admin, collection="demo"))
    olga = services.access.principal("olga")
    with pytest.raises(NotFoundError):
        next(services.chat.ask("Anything?", caller=olga, conversation_id=done.conversation_id))
    with pytest.raises(ConsultaError, match="signed-in"):
        next(services.chat.ask("Anything?", conversation_id=done.conversation_id))


def _shape(answer: dict) -> dict[str, object]:
    """The keys of an answer's JSON, and of its nested records."""
    shape: dict[str, object] = {"top": set(answer), "timings": set(answer["timings"])}
    for name in ("citations", "sources"):
        if answer[name]:
            shape[name] = set(answer[name][0])
    return shape


def test_the_cli_and_the_api_print_the_same_answer_fields(services, base_env):
    key = services.access.create_api_key("admin")
    client = TestClient(create_app(services), headers={"Authorization": f"Bearer {key}"})  # no lifespan: no close
    r = client.post("/v1/ask", json={"question": QUESTION, "collection": "demo"})
    assert r.status_code == 200, r.text
    api = r.json()
    cli = run_cli(["ask", QUESTION, "--collection", "demo", "--json"],
                  {**base_env, "CONSULTA_DATA_DIR": str(services.settings.data_dir)})
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)
    assert api["sources"] and printed["sources"]
    shape_api, shape_cli = _shape(api), _shape(printed)
    assert shape_api.pop("top") == shape_cli.pop("top") == set(AskResponse.model_fields)
    assert {k: v for k, v in shape_api.items() if k in shape_cli} == {k: v for k, v in shape_cli.items()
                                                                     if k in shape_api}
    assert {"language", "sources"} <= set(api["usage"]) and {"language", "sources"} <= set(printed["usage"])
    # what `consulta ask --json` printed before the two were one model is all still there
    assert {"answer", "refused", "language", "citations", "sources", "timings", "model", "usage"} <= set(printed)
    assert printed["conversation_id"] is None and api["conversation_id"]
