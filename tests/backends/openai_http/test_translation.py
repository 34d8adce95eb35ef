"""The upstream translation, alone and without sockets: error bodies and transport
failures to `UpstreamError`s, Retry-After, chunk reading, SSE framing with its limits,
and the exchange's two clocks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from backends.base import Usage
from backends.errors import UpstreamError
from backends.openai_http import errors
from backends.openai_http.relay import Exchange, Limits
from backends.openai_http.wire import EventTooLarge, read_chunk, sse_data


def translate(status: int, body: bytes | dict[str, Any], **headers: str) -> UpstreamError:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return errors.from_response(status, raw, httpx.Headers(headers))


# -- error bodies -------------------------------------------------------------------------


def test_openai_envelope_keeps_message_type_param_and_code() -> None:
    exc = translate(400, {"error": {"message": "bad prompt", "type": "invalid_request_error",
                                    "param": "prompt", "code": "invalid_prompt"}})
    assert (str(exc), exc.status, exc.type, exc.param, exc.code) == (
        "bad prompt", 400, "invalid_request_error", "prompt", "invalid_prompt")
    assert not isinstance(exc, errors.RetryableError)


def test_engine_dialects_of_the_envelope() -> None:
    llama = translate(400, {"error": {"code": 400, "type": "exceed_context_size_error",
                                      "message": "the request exceeds the context"}})
    assert (llama.code, llama.type, str(llama)) == (
        "context_length_exceeded", "invalid_request_error", "the request exceeds the context")
    vllm = translate(400, {"object": "error", "message": "temperature must be >= 0",
                           "type": "BadRequestError", "param": None, "code": 400})
    assert (str(vllm), vllm.code) == ("temperature must be >= 0", "invalid_request")


@pytest.mark.parametrize("body", [
    b"db password=hunter2 at /srv/app/app.py line 3",
    b"<html><body>Traceback (most recent call last): hunter2</body></html>",
    b'{"detail": "hunter2"}',
    b'{"error": "hunter2", "error_type": "validation"}',  # TGI
    b'{"error": {"msg": "hunter2"}}',
    b'["hunter2"]',
    b"\xff\xfe hunter2 \xff",
    b"[" * 100_000 + b"]" * 100_000,
], ids=["text", "html", "fastapi", "tgi", "no message", "list", "not utf-8", "deep json"])
def test_anything_else_is_a_generic_message_and_the_body_is_logged(body: bytes) -> None:
    with capture_logs() as logs:
        exc = translate(400, body)
    assert str(exc) == "The upstream server answered 400 with a body that is not an OpenAI error."
    assert (exc.status, exc.type, exc.code, exc.param) == (
        400, "invalid_request_error", "invalid_request", None)
    assert logs and logs[0]["log_level"] == "warning" and logs[0]["status"] == 400
    if b"hunter2" in body:
        assert "hunter2" in logs[0]["body"]


def test_logged_body_is_cut() -> None:
    with capture_logs() as logs:
        translate(500, b"x" * 1_000_000)
    assert len(logs[0]["body"]) <= errors.MAX_LOGGED_BODY + 1


def test_empty_body_says_so() -> None:
    exc = translate(404, b"")
    assert str(exc) == "The upstream server answered 404 without an error message."
    assert (exc.type, exc.code) == ("not_found_error", "not_found")


def test_message_is_cut_and_made_valid_unicode() -> None:
    exc = translate(400, {"error": {"message": "x" * 50_000}})
    assert len(str(exc)) == errors.MAX_MESSAGE and str(exc).endswith("…")
    exc = translate(400, b'{"error": {"message": "bad \\ud800 surrogate"}}')
    str(exc).encode("utf-8")  # a lone surrogate would break the client's JSON
    assert str(exc).startswith("bad ")


def test_codes_and_params_that_are_not_identifiers_are_dropped() -> None:
    exc = translate(400, {"error": {"message": "m", "code": "password=hunter2 and more",
                                    "param": "p" * 500, "type": "made_up_type"}})
    assert (exc.code, exc.param, exc.type) == ("invalid_request", None, "invalid_request_error")


@pytest.mark.parametrize(("status", "client_status", "code", "retryable"), [
    (500, 502, "upstream_error", False),
    (502, 502, "upstream_error", True),
    (503, 503, "upstream_unavailable", True),
    (504, 504, "upstream_timeout", True),
    (429, 429, "rate_limit_exceeded", False),
    (302, 502, "upstream_error", False),
])
def test_statuses(status: int, client_status: int, code: str, retryable: bool) -> None:
    exc = translate(status, b"")
    assert (exc.status, exc.code) == (client_status, code)
    assert isinstance(exc, errors.RetryableError) == retryable
    if client_status >= 500:
        assert exc.type == "server_error"


def test_error_event_in_a_stream() -> None:
    exc = errors.from_stream_error({"error": {"message": "out of memory", "code": 507}})
    assert (str(exc), exc.status, exc.code) == ("out of memory", 502, "upstream_error")
    exc = errors.from_stream_error({"error": {"message": "bad", "code": 400}})
    assert (exc.status, exc.code) == (400, "invalid_request")
    for code in (True, 10**30, -1, "400"):
        assert errors.from_stream_error({"error": {"message": "m", "code": code}}).status == 502


@pytest.mark.parametrize(("exc", "status", "code", "retryable"), [
    (httpx.ConnectError("refused"), 502, "upstream_unreachable", True),
    (httpx.ConnectTimeout("slow"), 502, "upstream_unreachable", True),
    (httpx.RemoteProtocolError("closed"), 502, "upstream_disconnected", True),
    (httpx.ReadError("reset"), 502, "upstream_disconnected", True),
    (httpx.PoolTimeout("busy"), 503, "upstream_busy", False),
    (httpx.ReadTimeout("silent"), 504, "upstream_timeout", False),
])
def test_transport_failures(exc: httpx.TransportError, status: int, code: str,
                            retryable: bool) -> None:
    error = errors.from_transport(exc, 7)
    assert (error.status, error.code) == (status, code)
    assert isinstance(error, errors.RetryableError) == retryable
    if code == "upstream_timeout":
        assert str(error) == "The upstream server sent no data for 7 seconds."


# -- Retry-After --------------------------------------------------------------------------

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None),
    ("7", 7.0),
    (" 2.5 ", 2.5),
    ("0", 1.0),
    ("-5", 1.0),
    ("inf", 3600.0),
    ("-inf", 1.0),
    ("1e400", 3600.0),
    ("99999999999", 3600.0),
    ("9" * 5000, 3600.0),
    ("nan", None),
    ("soon", None),
    ("", None),
    ("Thu, 01 Jan 2026 12:02:00 GMT", 120.0),
    ("Thu, 01 Jan 2026 11:00:00 GMT", 1.0),
    ("Fri, 31 Dec 9999 23:59:59 GMT", 3600.0),
    ("Thu, 01 Jan 2026 12:02:00", 120.0),  # no zone: taken as UTC
    ("Mon, 99 Foo 2026 99:99:99 GMT", None),
])
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert errors.parse_retry_after(value, NOW) == seconds


def test_retry_after_reaches_the_error_clamped() -> None:
    assert translate(429, b"", **{"retry-after": "inf"}).retry_after == 3600.0
    assert translate(429, b"", **{"retry-after": "nan"}).retry_after is None


# -- chunks -------------------------------------------------------------------------------


def test_read_chunk_accepts_what_servers_send() -> None:
    piece = read_chunk({"choices": [{"text": "hi", "finish_reason": "eos"}],
                        "usage": {"prompt_tokens": 3.0, "completion_tokens": 2}}, False)
    assert (piece.text, piece.finish_reason, piece.usage) == ("hi", "stop", Usage(3, 2))
    piece = read_chunk({"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}],
                        "usage": None}, True)
    assert (piece.text, piece.finish_reason, piece.usage) == ("", None, None)
    assert read_chunk({"choices": [{"message": {"content": "whole"}}]}, True).text == "whole"
    assert read_chunk({"choices": [], "usage": {}}, False).usage == Usage(0, 0)


@pytest.mark.parametrize(("payload", "is_chat"), [
    ([1], False),
    ("text", False),
    ({"choices": {"text": "x"}}, False),
    ({"choices": ["x"]}, False),
    ({"choices": [{"text": 5}]}, False),
    ({"choices": [{"text": "a\ud800"}]}, False),
    ({"choices": [{"text": "", "finish_reason": 1}]}, False),
    ({"choices": [], "usage": [1]}, False),
    ({"choices": [], "usage": {"prompt_tokens": [1]}}, False),
    ({"choices": [], "usage": {"prompt_tokens": float("inf")}}, False),
    ({"choices": [], "usage": {"prompt_tokens": float("nan")}}, False),
    ({"choices": [], "usage": {"completion_tokens": -1}}, False),
    ({"choices": [], "usage": {"completion_tokens": 2.5}}, False),
    ({"choices": [], "usage": {"completion_tokens": True}}, False),
    ({"choices": [], "usage": {"completion_tokens": 10**20}}, False),
    ({"choices": [{"delta": "x"}]}, True),
    ({"choices": [{"delta": {"content": ["part"]}}]}, True),
])
def test_read_chunk_refuses_wrong_types(payload: Any, is_chat: bool) -> None:
    with pytest.raises(ValueError):
        read_chunk(payload, is_chat)


# -- SSE framing --------------------------------------------------------------------------


async def _feed(pieces: Iterable[bytes], consumed: list[int]) -> AsyncIterator[bytes]:
    for piece in pieces:
        consumed.append(len(piece))
        yield piece


def events(pieces: Iterable[bytes], limit: int = 1024) -> list[str]:
    async def run() -> list[str]:
        return [e async for e in sse_data(_feed(pieces, []), limit)]
    return asyncio.run(run())


def test_sse_framing() -> None:
    body = [b": ping\n\nevent: x\nid: 1\ndata: one\n\n", b"data: two\r", b"\n\r\ndata:a\n",
            b"data: b\n\nretry: 5\n\ndata: last"]
    assert events(body) == ["one", "two", "a\nb", "last"]
    assert events([b"data: [DONE]\n\n"]) == ["[DONE]"]
    assert events([b": only comments\n\n" * 100]) == []


def test_sse_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        events([b"data: \xff\n\n"])


@pytest.mark.parametrize("endless", [
    b"a" * 100,  # one data line that never ends
    b"data: a\n",  # an event of many lines that never ends
])
def test_sse_stops_reading_at_the_event_limit(endless: bytes) -> None:
    consumed: list[int] = []

    def forever() -> Iterable[bytes]:
        yield b"data: ok\n\ndata: "
        while True:
            yield endless

    async def run() -> None:
        async for _ in sse_data(_feed(forever(), consumed), 1024):
            pass

    with pytest.raises(EventTooLarge, match="over 1024 bytes"):
        asyncio.run(run())
    assert sum(consumed) <= 1024 + 2 * len(endless) + 32


# -- the exchange's clocks ----------------------------------------------------------------


def limits(total: float, chunk: float) -> Limits:
    return Limits(total, chunk, 1024, 1024)


def test_exchange_names_the_clock_that_ran_out() -> None:
    async def never(exchange: Exchange) -> None:
        await exchange.wait(asyncio.Event().wait())

    async def run(total: float, chunk: float) -> str:
        with pytest.raises(UpstreamError) as raised:
            await never(Exchange(limits(total, chunk)))
        assert raised.value.status == 504 and raised.value.code == "upstream_timeout"
        return str(raised.value)

    assert asyncio.run(run(0.05, 30)) == "The upstream server did not finish within 0.05 seconds."
    assert asyncio.run(run(30, 0.05)) == "The upstream server sent no data for 0.05 seconds."


def test_exchange_deadline_spans_every_wait() -> None:
    async def run() -> None:
        exchange = Exchange(limits(0.3, 10))
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, done.set)
        await exchange.wait(done.wait())  # the first wait succeeds...
        with pytest.raises(UpstreamError, match="did not finish"):
            await exchange.wait(asyncio.Event().wait())  # ...the next has what is left
        assert loop.time() >= exchange.deadline

    asyncio.run(run())


def test_exchange_lets_other_timeouts_through() -> None:
    async def fails() -> None:
        raise TimeoutError("the awaited thing's own")

    async def run() -> None:
        with pytest.raises(TimeoutError, match="own"):
            await Exchange(limits(10, 10)).wait(fails())

    asyncio.run(run())
