"""Hostile upstreams, through a real gateway process on real sockets: pings or headers
that trickle forever are cut at the deadline, endless bodies and lines are refused
without being buffered, malformed answers are a 502 (never a 500), foreign error bodies
never reach the client, and any Retry-After is clamped."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import openai
import pytest

from tests.backends.openai_http.fake_upstream import FLOOD_BYTES, FakeUpstream, chunk, sse
from tests.backends.openai_http.support import replica_states, start_gateway, wait_loaded
from tests.support.server import GatewayProcess

QUIET = {"fail_threshold": 1000, "probe_interval": 0, "max_retries": 0}
LIMITS = {"max_response_bytes": 1024 * 1024, "max_event_bytes": 64 * 1024}
HANG = 60  # a client timeout far beyond every limit under test: reaching it is the bug


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory,
          upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    url = upstream.base_url
    models = {
        # the whole exchange is bounded, however the upstream keeps the connection busy
        "deadline": ("openai_http", {"base_url": url, "chunk_timeout": 30.0,
                                     "total_timeout": 1.5, **QUIET}),
        # comments do not count as data
        "idle": ("openai_http", {"base_url": url, "chunk_timeout": 0.5,
                                 "total_timeout": 30.0, **QUIET}),
        "limited": ("openai_http", {"base_url": url, "chunk_timeout": 30.0,
                                    "total_timeout": 60.0, **LIMITS, **QUIET}),
    }
    proc = start_gateway(tmp_path_factory.mktemp("hostile"), "front", models)
    yield proc
    proc.stop()


@pytest.fixture
def fake(upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    yield upstream
    upstream.mode = "ok"


def post(front: GatewayProcess, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "prompt": "Say hello", "max_tokens": 8, **extra}
    return httpx.post(f"{front.base_url}/v1/completions", json=body, timeout=HANG)


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    return error


def peak_rss_mib(proc: GatewayProcess) -> float:
    """The gateway process's peak resident set size (Linux's VmHWM)."""
    assert proc._proc is not None
    status = Path(f"/proc/{proc._proc.pid}/status")
    if not status.exists():
        pytest.skip("needs Linux's /proc to read a process's peak memory")
    line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def wait_for(condition: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# -- time -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ping_forever", "trickle_headers"])
def test_busy_upstream_is_cut_at_total_timeout(front: GatewayProcess, fake: FakeUpstream,
                                               mode: str) -> None:
    fake.mode = mode
    started = time.monotonic()
    error = assert_envelope(post(front, "deadline"), 504, "upstream_timeout")
    assert "did not finish within 1.5 seconds" in error["message"]
    assert time.monotonic() - started < HANG / 2
    # a stream fails the same way: nothing was sent yet, so it is an HTTP status
    error = assert_envelope(post(front, "deadline", stream=True), 504, "upstream_timeout")
    assert "did not finish within 1.5 seconds" in error["message"]


def test_pings_after_the_first_token_end_the_stream_with_an_error_event(
    front: GatewayProcess, fake: FakeUpstream
) -> None:
    fake.mode = "hello_then_ping"
    sdk = openai.OpenAI(base_url=f"{front.base_url}/v1", api_key="k", max_retries=0,
                        timeout=HANG)
    texts: list[str] = []
    with pytest.raises(openai.APIError, match=r"did not finish within 1\.5 seconds"):
        for piece in sdk.completions.create(model="deadline", prompt="x", max_tokens=4,
                                            stream=True):
            texts.append(piece.choices[0].text)
    assert texts == ["Hello"]


def test_pings_do_not_reset_the_idle_timeout(front: GatewayProcess, fake: FakeUpstream) -> None:
    fake.mode = "ping_forever"
    error = assert_envelope(post(front, "idle"), 504, "upstream_timeout")
    assert "sent no data for 0.5 seconds" in error["message"]


# -- memory -----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "stream", "limit"), [
    ("flood_body", False, "1048576-byte limit"),  # an upstream that ignored stream: true
    ("flood_line", False, "over 65536 bytes"),
    ("flood_line", True, "over 65536 bytes"),
])
def test_endless_upstream_answers_are_refused_unbuffered(
    front: GatewayProcess, fake: FakeUpstream, mode: str, stream: bool, limit: str
) -> None:
    peak_before = peak_rss_mib(front)
    floods = fake.floods_done
    fake.mode = mode
    error = assert_envelope(post(front, "limited", stream=stream), 502, "upstream_bad_response")
    assert limit in error["message"]
    wait_for(lambda: fake.floods_done > floods, "the upstream is still sending")
    # the gateway stopped reading at the limit: what got out is the limit plus the
    # socket buffers, not the 256 MiB on offer
    assert fake.sent < FLOOD_BYTES // 4, fake.sent
    assert peak_rss_mib(front) - peak_before < 64


def test_declared_length_over_the_limit_is_refused_at_once(front: GatewayProcess,
                                                           fake: FakeUpstream) -> None:
    fake.mode = "declared_huge"  # sends a byte every 50 ms: chunk_timeout never fires
    error = assert_envelope(post(front, "limited"), 502, "upstream_bad_response")
    assert "300000000 bytes" in error["message"]


# -- malformed answers ------------------------------------------------------------------


def _stream(*payloads: dict | str | bytes) -> bytes:
    return b"".join(p if isinstance(p, bytes) else sse(p) for p in payloads) + sse("[DONE]")


FINISH = chunk("", "stop")
BAD_STREAMS = {
    "invalid utf-8": b'data: {"choices": [{"text": "\xff\xfe", "finish_reason": "stop"}]}\n\n',
    "usage 1e400": _stream(FINISH, b'data: {"choices": [], "usage": {"prompt_tokens": 1e400,'
                                   b' "completion_tokens": 1}}\n\n'),
    "usage a list": _stream(FINISH, {"choices": [], "usage": [1]}),
    "usage count a list": _stream(FINISH, {"choices": [], "usage": {"prompt_tokens": [1]}}),
    "usage negative": _stream(FINISH, {"choices": [], "usage": {"completion_tokens": -5}}),
    "usage 5000 digits": _stream(FINISH, '{"choices": [], "usage": {"prompt_tokens": '
                                         + "9" * 5000 + "}}"),
    "deep json": _stream("[" * 100_000 + "]" * 100_000),
    "chunk a list": _stream([1, 2]),  # type: ignore[arg-type]
    "chunk a string": _stream('"hello"'),
    "choices an object": _stream({"choices": {"text": "x"}}),
    "choice a string": _stream({"choices": ["x"]}),
    "text a number": _stream({"choices": [{"text": 5, "finish_reason": "stop"}]}),
    "finish_reason an object": _stream({"choices": [{"text": "", "finish_reason": {"a": 1}}]}),
    "lone surrogate": _stream('{"choices": [{"text": "a\\ud800", "finish_reason": "stop"}]}'),
    "error not an object": _stream({"error": ["x"]}),
}


@pytest.mark.parametrize("raw", BAD_STREAMS.values(), ids=BAD_STREAMS.keys())
@pytest.mark.parametrize("stream", [False, True])
def test_malformed_stream_is_a_502(front: GatewayProcess, fake: FakeUpstream, raw: bytes,
                                   stream: bool) -> None:
    fake.mode, fake.raw = "sse_raw", raw
    response = post(front, "limited", stream=stream)
    if raw == BAD_STREAMS["error not an object"]:  # an error event, in no known shape
        error = assert_envelope(response, 502, "upstream_error")
        assert "not an OpenAI error" in error["message"]
    else:
        assert_envelope(response, 502, "upstream_bad_response")


BAD_BODIES = {
    "invalid utf-8": b'{"choices": [{"text": "\xff", "finish_reason": "stop"}]}',
    "deep json": b"[" * 100_000 + b"]" * 100_000,
    "usage 1e400": b'{"choices": [{"text": "x"}], "usage": {"completion_tokens": 1e400}}',
    "chat message a list": b'{"choices": [{"message": [1]}]}',
}


@pytest.mark.parametrize("raw", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_malformed_whole_body_is_a_502(front: GatewayProcess, fake: FakeUpstream,
                                       raw: bytes) -> None:
    fake.mode, fake.reply = "reply", (200, "application/json", "", raw)
    if b"message" in raw:
        response = httpx.post(f"{front.base_url}/v1/chat/completions", timeout=HANG, json={
            "model": "limited", "messages": [{"role": "user", "content": "hi"}]})
    else:
        response = post(front, "limited")
    assert_envelope(response, 502, "upstream_bad_response")


def test_broken_content_encoding_is_a_502(front: GatewayProcess, fake: FakeUpstream) -> None:
    fake.mode = "reply"
    fake.reply = (200, "application/json", "content-encoding: gzip\r\n", b"not gzip at all")
    assert_envelope(post(front, "limited"), 502, "upstream_bad_response")


def test_upstream_is_asked_for_uncompressed_answers(front: GatewayProcess,
                                                    fake: FakeUpstream) -> None:
    # A gzip bomb expands a thousandfold inside one network read, before any byte
    # count can see it: the gateway asks for identity encoding.
    fake.mode = "ok"
    before = len(fake.posts)
    assert post(front, "limited").status_code == 200
    assert fake.posts[before].headers["accept-encoding"] == "identity"


def test_malformed_chunk_mid_stream_ends_with_an_error_event(front: GatewayProcess,
                                                             fake: FakeUpstream) -> None:
    fake.mode, fake.raw = "sse_raw", _stream(chunk("Hello"), {"choices": [{"text": 7}]})
    with httpx.stream("POST", f"{front.base_url}/v1/completions", timeout=HANG,
                      json={"model": "limited", "prompt": "x", "stream": True}) as response:
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.iter_lines() if line]
    assert events[0]["choices"][0]["text"] == "Hello"
    assert events[-1]["error"]["code"] == "upstream_bad_response"


# -- error bodies -----------------------------------------------------------------------

SECRET = b"db password=hunter2 at /srv/app/app.py line 3"
FOREIGN = {
    "plain text": ("text/plain", SECRET),
    "html": ("text/html", b"<html><body><pre>" + SECRET + b"</pre></body></html>"),
    "fastapi json": ("application/json", b'{"detail": "' + SECRET + b'"}'),
    "tgi json": ("application/json", b'{"error": "' + SECRET + b'", "error_type": "x"}'),
}


@pytest.mark.parametrize(("content_type", "raw"), FOREIGN.values(), ids=FOREIGN.keys())
def test_foreign_error_bodies_reach_only_the_log(front: GatewayProcess, fake: FakeUpstream,
                                                 content_type: str, raw: bytes) -> None:
    fake.mode, fake.reply = "reply", (400, content_type, "", raw)
    response = post(front, "limited")
    error = assert_envelope(response, 400, "invalid_request")
    assert error["message"] == ("The upstream server answered 400 with a body that is not an "
                                "OpenAI error.")
    assert "hunter2" not in response.text and "/srv/" not in response.text
    wait_for(lambda: "hunter2" in front.logs(), "the body was not logged")


def test_openai_error_message_is_relayed_cut_to_a_sane_length(front: GatewayProcess,
                                                             fake: FakeUpstream) -> None:
    envelope = {"error": {"message": "too long " * 1000, "type": "invalid_request_error",
                          "param": "prompt", "code": "a code with spaces"}}
    fake.mode = "reply"
    fake.reply = (400, "application/json", "", json.dumps(envelope).encode())
    error = assert_envelope(post(front, "limited"), 400, "invalid_request")
    assert error["message"].startswith("too long too long")
    assert len(error["message"]) <= 1000
    assert error["param"] == "prompt"


# -- Retry-After --------------------------------------------------------------------------

RATE_LIMITED = json.dumps({"error": {"message": "slow down", "type": "rate_limit_error",
                                     "param": None, "code": "rate_limit_exceeded"}}).encode()


@pytest.mark.parametrize(("value", "expected"), [
    ("inf", "3600"),
    ("99999999999", "3600"),
    ("1e400", "3600"),
    ("-5", "1"),
    ("nan", None),
    ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", "1"),
    ("in two minutes", "~120"),  # an HTTP date, made when the test runs
])
def test_retry_after_is_parsed_safely_and_clamped(front: GatewayProcess, fake: FakeUpstream,
                                                  value: str, expected: str | None) -> None:
    if value == "in two minutes":
        value = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    fake.mode = "reply"
    fake.reply = (429, "application/json", f"retry-after: {value}\r\n", RATE_LIMITED)
    response = post(front, "limited")
    assert_envelope(response, 429, "rate_limit_exceeded")
    if expected is None:
        assert "retry-after" not in response.headers
    elif expected == "~120":
        assert 60 <= int(response.headers["retry-after"]) <= 120
    else:
        assert response.headers["retry-after"] == expected


# -- probes -----------------------------------------------------------------------------


def test_a_probe_that_never_ends_cannot_stall_startup(tmp_path: Path) -> None:
    fake = FakeUpstream(get_mode="trickle").start()
    try:
        options = {"base_url": fake.base_url, "probe_timeout": 0.5, **QUIET}
        proc = start_gateway(tmp_path, "probed", {"slow": ("openai_http", options)},
                             wait_ready=False)
        try:
            wait_loaded(proc, timeout=HANG / 2)  # startup probes every replica once
            replica = replica_states(proc, "slow")[0]
            assert replica["state"] == "ejected"
            assert replica["last_error"] == "probe timed out after 0.5 s"
        finally:
            proc.stop()
    finally:
        fake.stop()
