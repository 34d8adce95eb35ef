"""A failure anywhere below the request-id middleware still reaches the client as an
envelope with its `x-request-id`, and the access line is written whatever the fields
hold (a lone surrogate from a client's JSON, a failing log handler)."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send
from structlog.testing import capture_logs

from backends.errors import BackendError
from gateway import middleware
from gateway.middleware import RequestContext, access_record
from tests.support.edge import EdgeServer
from tests.support.inprocess import ScriptedBackend, scripted_app


async def fails_before_answering(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom in /srv/secret/app.py line 3")


async def fails_after_answering(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("boom")


async def odd_fields(scope: Scope, receive: Receive, send: Send) -> None:
    record = access_record(scope)
    record.model = "m\ud800"  # what json.loads gives for "m\ud800" in a request body
    record.error = "line\nbreak\x1b[31m"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


@pytest.mark.anyio
async def test_failure_before_the_response_is_an_envelope_with_the_request_id() -> None:
    with capture_logs() as logs:
        async with client(RequestContext(fails_before_answering)) as c:
            r = await c.get("/x", headers={"x-request-id": "rid-1"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "rid-1"
    assert r.json()["error"]["code"] == "internal_error"
    assert "secret" not in r.text and "app.py" not in r.text
    access = [x for x in logs if x["event"] == "request"]
    assert len(access) == 1
    assert access[0]["status"] == 500 and access[0]["error"] == "internal_error"
    assert any(x["event"] == "request failed" for x in logs)  # the details go to the log


@pytest.mark.anyio
async def test_failure_after_the_response_started_is_logged() -> None:
    with capture_logs() as logs, pytest.raises(RuntimeError):
        # re-raised: only the server can cut a response that is half sent
        async with client(RequestContext(fails_after_answering)) as c:
            await c.get("/x")
    access = [x for x in logs if x["event"] == "request"]
    assert access[0]["status"] == 200 and access[0]["error"] == "internal_error"


@pytest.mark.anyio
async def test_access_line_fields_are_always_encodable() -> None:
    with capture_logs() as logs:
        async with client(RequestContext(odd_fields)) as c:
            r = await c.get("/x%ED%A0%80%0Ay")
    assert r.status_code == 200
    (access,) = [x for x in logs if x["event"] == "request"]
    for value in access.values():
        if isinstance(value, str):
            value.encode("utf-8")  # strict: no lone surrogate reaches a log handler
            assert "\n" not in value and "\x1b" not in value
    assert access["model"] == "m\\ud800"


@pytest.mark.anyio
async def test_a_failing_access_log_does_not_fail_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        def info(self, *args: object, **kw: object) -> None:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

        def error(self, *args: object, **kw: object) -> None:
            pass

    monkeypatch.setattr(middleware, "log", Broken())
    async with client(RequestContext(odd_fields)) as c:
        r = await c.get("/x")
    assert r.status_code == 200 and r.text == "ok"


def test_error_text_that_cannot_be_encoded_is_still_an_envelope() -> None:
    """A backend error whose message holds a lone surrogate: the handler's JSON response
    cannot be encoded, and before this the client got a text/plain 500 without id."""
    backend = ScriptedBackend("m", fail_with=BackendError("bad text \ud800 from the engine"))
    with EdgeServer(scripted_app(backend)) as server:
        r = httpx.post(f"{server.base_url}/v1/completions", json={"model": "m", "prompt": "x"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"].startswith("req_")
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
