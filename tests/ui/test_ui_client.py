"""ui/client.py against a small HTTP server started by the test (a real socket, a fake API).

The server answers the way Consulta's API does on the wire; the browser tests cover the real one.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.api.schemas import AskResponse, CitationOut, Timings
from ui.client import (
    ApiClient,
    ApiError,
    ApiUnreachable,
    DoneEvent,
    ErrorEvent,
    SourcesEvent,
    TokenEvent,
    UploadFile,
    parse_sse,
)

CITATION = CitationOut(
    n=1,
    chunk_id="c1",
    source="docs/handbook.pdf",
    title="Handbook",
    page=2,
    section="Expenses",
    text="Paid in 30 days.",
)
DONE = AskResponse(
    answer="Within 30 days [1].",
    refused=False,
    citations=[CITATION],
    timings=Timings(retrieval_ms=12.5, ttft_ms=80.0, total_ms=400.0),
    model="tiny",
)


USER = {"id": 2, "username": "ana", "role": "reader", "created_at": "2026-11-23T10:00:00+00:00"}
JOB = {
    "job_id": "j1",
    "status": "done",
    "collection": "hr",
    "user": "ana",
    "progress": {"done": 2, "total": 2},
    "chunks_added": 3,
    "total_chunks": 10,
    "created_at": "2026-11-23T10:00:00+00:00",
    "files": [
        {"source": "a.md", "status": "ingested", "chunks": 3},
        {"source": "b.pdf", "status": "failed", "error": "not a PDF"},
    ],
}


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


UTF8_TOKEN = sse("token", {"text": "— très été "}).encode()
UTF8_CUT = UTF8_TOKEN.index("—".encode()) + 1  # inside the dash's three bytes


# The body of a streamed answer, cut into the pieces the server writes with pauses in between:
# cuts fall inside lines and inside UTF-8 characters, with CRLF line ends, comments and an unknown event.
ANSWER_STREAM = [
    (sse("sources", {"citations": [CITATION.model_dump()]})).encode(),
    b": keep-alive\r\n\r\nevent: tok",
    b'en\r\ndata: {"text": "Within 30 d',
    b'ays "}\r\n\r\n',
    UTF8_TOKEN[:UTF8_CUT],
    UTF8_TOKEN[UTF8_CUT:],
    sse("progress", {"ignored": True}).encode(),
    b'event: token\ndata: {"text":\ndata: "[1]."}\n\n',  # one JSON value split over two data lines
    sse("done", json.loads(DONE.model_dump_json())).encode(),
]


class FakeApi(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: list[tuple[str, str, dict[str, str], bytes]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: list[bytes], *, finish: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
            time.sleep(0.01)
        if finish:
            self.wfile.write(b"0\r\n\r\n")
        else:  # the connection drops in the middle of the body
            self.close_connection = True

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, dict(self.headers), b""))
        if self.path == "/health":
            self._send(200, {"status": "ok", "index_chunks": 7, "model": "tiny", "embedder": "e5", "version": "0.1"})
        elif self.path == "/v1/collections":
            self._send(200, {"collections": [{"name": "demo", "documents": 2, "chunks": 7}]})
        elif self.path == "/v1/jobs/j1":
            self._send(200, JOB)
        elif self.path == "/v1/auth/me":
            self._send(200, {"user": USER, "readable": ["demo"], "writable": []})
        elif self.path.startswith("/v1/documents"):
            doc = {"document_id": "d1", "source": "docs/handbook.pdf", "collection": "demo", "pages": 2, "chunks": 4}
            self._send(200, {"documents": [doc]})
        else:
            self._send(404, {"error": {"type": "not_found", "message": f"No route {self.path}"}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.requests.append(("POST", self.path, dict(self.headers), body))
        if self.path == "/v1/documents":
            failed = {"source": "b.pdf", "status": "failed", "error": "not a PDF"}
            self._send(202, JOB | {"status": "queued", "progress": {"done": 0, "total": 1}, "files": [failed]})
            return
        request = json.loads(body)
        if self.path == "/v1/auth/login":
            if request == {"username": "ana", "password": "right"}:
                self._send(200, {"token": "session-1", "expires_in": 3600, "user": USER})
            else:
                self._send(401, {"error": {"type": "unauthorized", "message": "wrong user name or password"}})
            return
        question = request.get("question", "")
        if self.path == "/v1/search":
            hit = CITATION.model_dump(exclude={"n", "start", "end"}) | {"score": 0.9}
            self._send(200, {"hits": [hit]})
        elif question == "busy":
            self._send(503, {"error": {"type": "busy", "message": "The model is busy; try again."}})
        elif question == "validation":
            self._send(422, {"detail": [{"msg": "String should have at least 1 character"}]})
        elif question == "crash":
            self._send(500, b"Internal Server Error", "text/plain")
        elif not request.get("stream"):
            self._send(200, json.loads(DONE.model_dump_json()))
        elif question == "no-sse":  # an API that ignores `stream`
            self._send(200, json.loads(DONE.model_dump_json()))
        elif question == "engine-error":
            crash = {"error": {"type": "engine", "message": "The model crashed."}}
            self._stream([sse(name, data).encode() for name, data in
                          [("sources", {"citations": []}), ("token", {"text": "Par"}), ("error", crash)]])  # fmt: skip
        elif question == "ends-early":
            self._stream([sse("token", {"text": "Par"}).encode()])
        elif question == "cut":
            self._stream([sse("token", {"text": "Par"}).encode()], finish=False)
        else:
            self._stream(ANSWER_STREAM)


@pytest.fixture(scope="module")
def fake_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(fake_api: str) -> ApiClient:
    FakeApi.requests.clear()
    return ApiClient(fake_api + "/", token="secret")


def test_streamed_answer_arrives_as_typed_events(client: ApiClient):
    events = list(client.ask_stream("When are expenses paid?", collection="demo"))

    assert isinstance(events[0], SourcesEvent)
    assert events[0].citations == [CITATION]
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    assert tokens == ["Within 30 days ", "— très été ", "[1]."]
    assert isinstance(events[-1], DoneEvent)
    assert events[-1].response == DONE
    assert len(events) == 5  # the unknown `progress` event and the comment are skipped

    method, path, headers, body = FakeApi.requests[-1]
    assert (method, path) == ("POST", "/v1/ask")
    assert json.loads(body) == {"question": "When are expenses paid?", "collection": "demo", "stream": True}
    assert headers["Accept"] == "text/event-stream"
    assert headers["Authorization"] == "Bearer secret"


def test_error_event_ends_the_stream(client: ApiClient):
    events = list(client.ask_stream("engine-error"))
    assert [type(e) for e in events] == [SourcesEvent, TokenEvent, ErrorEvent]
    assert events[-1].error.type == "engine"
    assert events[-1].error.message == "The model crashed."


def test_a_stream_that_ends_early_is_not_mistaken_for_an_answer(client: ApiClient):
    events = list(client.ask_stream("ends-early"))
    assert events == [TokenEvent("Par")]  # no DoneEvent: the UI says the answer was interrupted


def test_a_dropped_connection_keeps_what_arrived_and_says_so(client: ApiClient):
    events = list(client.ask_stream("cut"))
    assert events[0] == TokenEvent("Par")
    assert isinstance(events[1], ErrorEvent) and events[1].error.type == "connection_lost"
    assert len(events) == 2


def test_plain_json_answer_is_replayed_as_events(client: ApiClient):
    events = list(client.ask_stream("no-sse"))
    assert [type(e) for e in events] == [SourcesEvent, TokenEvent, DoneEvent]
    assert events[1].text == DONE.answer


def test_api_errors_carry_type_status_and_message(client: ApiClient):
    with pytest.raises(ApiError) as busy:
        list(client.ask_stream("busy"))
    assert (busy.value.status, busy.value.type) == (503, "busy")
    assert busy.value.message == "The model is busy; try again."

    with pytest.raises(ApiError, match="at least 1 character") as invalid:
        client.ask("validation")
    assert invalid.value.status == 422

    with pytest.raises(ApiError, match="HTTP 500: Internal Server Error"):
        client.ask("crash")


def test_unreachable_api_names_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again before it is used
    client = ApiClient(url)
    with pytest.raises(ApiUnreachable) as exc:
        client.health()
    assert exc.value.url == url
    assert exc.value.reason == "connection refused"
    assert url in str(exc.value)
    with pytest.raises(ApiUnreachable):
        next(client.ask_stream("anything"))


def test_listing_endpoints_parse_into_schemas(client: ApiClient):
    health = client.health()
    assert (health.status, health.index_chunks, health.model) == ("ok", 7, "tiny")
    assert [(c.name, c.documents) for c in client.collections()] == [("demo", 2)]
    docs = client.documents("demo")
    assert [(d.source, d.pages) for d in docs] == [("docs/handbook.pdf", 2)]
    assert FakeApi.requests[-1][1] == "/v1/documents?collection=demo"
    assert client.ask("Anything?") == DONE
    assert client.search("expenses").hits[0].source == "docs/handbook.pdf"


def test_upload_answers_with_a_job_whose_progress_can_be_followed(client: ApiClient):
    job = client.upload(
        [UploadFile("a.md", b"# A\n", "text/markdown"), UploadFile("b.pdf", b"%PDF-1.4 nope", "application/pdf")],
        collection="hr",
    )
    assert (job.job_id, job.status) == ("j1", "queued")
    _, path, headers, body = FakeApi.requests[-1]
    assert path == "/v1/documents"
    assert headers["Content-Type"].startswith("multipart/form-data")
    assert body.count(b'name="files"') == 2
    assert b'filename="a.md"' in body and b'filename="b.pdf"' in body
    assert b'name="collection"\r\n\r\nhr' in body

    done = client.job(job.job_id)
    assert done.status == "done" and (done.progress.done, done.progress.total) == (2, 2)
    assert [(f.source, f.status, f.error) for f in done.files] == [
        ("a.md", "ingested", None),
        ("b.pdf", "failed", "not a PDF"),
    ]


def test_login_returns_a_token_that_later_calls_send(fake_api: str):
    anonymous = ApiClient(fake_api)
    with pytest.raises(ApiError) as wrong:
        anonymous.login("ana", "wrong")
    assert wrong.value.status == 401 and "wrong user name" in wrong.value.message

    session = anonymous.login("ana", "right")
    assert session.token == "session-1" and session.user.role == "reader"
    me = ApiClient(fake_api, token=session.token).me()
    assert me.readable == ["demo"]
    assert FakeApi.requests[-1][2]["Authorization"] == "Bearer session-1"


def test_parse_sse_follows_the_framing_rules():
    lines = ["event: a", "data:no-space", "", ": comment", "id: 7", "data: x", "data:  y", "", "event: tail", "data: z"]
    assert [(e.event, e.data) for e in parse_sse(lines)] == [("a", "no-space"), ("message", "x\n y"), ("tail", "z")]
