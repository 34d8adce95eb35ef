"""Error translation, in process: whatever a backend raises becomes one OpenAI envelope
with the right status, type, code, param and headers, streamed or not, and nothing of
the server's internals reaches the client."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backends.base import Capabilities
from backends.errors import (
    BackendError,
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    UpstreamError,
)
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.errors import APIError
from gateway.registry import ModelRegistry, ServedModel
from tests.support.inprocess import ScriptedBackend, asgi_client, scripted_app
from tests.support.wire import assert_envelope

pytestmark = pytest.mark.anyio

SECRET = "boom in /secret/path/engine.py line 42"


@dataclass(frozen=True)
class Expect:
    status: int
    type: str
    code: str | None
    says: str  # in the message
    param: str | None = None
    retry_after: str | None = None


INVALID = "invalid_request_error"
GENERIC = "error while processing"
CONTEXT = "context_length_exceeded"
# what a backend raises before its first event -> what the client sees
CASES: list[tuple[BaseException, Expect]] = [
    (InvalidRequest("bad thing", "suffix", "odd"), Expect(400, INVALID, "odd", "bad", "suffix")),
    (ContextLengthExceeded(600, 10, 512), Expect(400, INVALID, CONTEXT, "512", "prompt")),
    (ContextLengthExceeded(600, None, 512), Expect(400, INVALID, CONTEXT, "600", "prompt")),
    (
        Overloaded("full", 2.4),
        Expect(429, "rate_limit_error", "rate_limit_exceeded", "full", None, "2"),
    ),
    (
        Overloaded("full", 0.01),
        Expect(429, "rate_limit_error", "rate_limit_exceeded", "full", None, "1"),
    ),
    (
        UpstreamError("no such model upstream", 404, INVALID, "model_not_found", "model"),
        Expect(404, INVALID, "model_not_found", "upstream", "model"),
    ),
    (
        UpstreamError("too slow", 504, code="upstream_timeout", retry_after=3.2),
        Expect(504, "server_error", "upstream_timeout", "too slow", None, "3"),
    ),
    (UpstreamError("unreachable"), Expect(502, "server_error", None, "unreachable")),
    (BackendError("out of memory"), Expect(500, "server_error", "backend_error", "memory")),
    (APIError(418, "short", INVALID, "x", "teapot"), Expect(418, INVALID, "teapot", "short", "x")),
    (RuntimeError(SECRET), Expect(500, "server_error", "internal_error", GENERIC)),
    (ValueError(SECRET), Expect(500, "server_error", "internal_error", GENERIC)),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("exc", "expect"), CASES, ids=[f"{type(e).__name__}-{x.status}" for e, x in CASES]
)
async def test_backend_exception_becomes_its_envelope(
    exc: BaseException, expect: Expect, stream: bool
) -> None:
    backend = ScriptedBackend("m", fail_with=exc)
    async with asgi_client(scripted_app(backend)) as client:
        response = await client.post(
            "/v1/completions", json={"model": "m", "prompt": "x", "stream": stream}
        )
    error = assert_envelope(response, expect.status)
    assert error["type"] == expect.type
    assert error["param"] == expect.param and error["code"] == expect.code
    assert expect.says in error["message"]
    assert response.headers.get("retry-after") == expect.retry_after
    assert "secret" not in response.text and "engine.py" not in response.text
    assert response.headers["x-request-id"]


async def test_same_translation_for_chat() -> None:
    backend = ScriptedBackend(
        "m", fail_with=Overloaded("busy", 5), capabilities=Capabilities(chat_template=True)
    )
    async with asgi_client(scripted_app(backend)) as client:
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        response = await client.post("/v1/chat/completions", json=body)
    assert_envelope(response, 429, code="rate_limit_exceeded")
    assert response.headers["retry-after"] == "5"


async def test_failure_during_a_plain_response_is_an_envelope() -> None:
    backend = ScriptedBackend("m", "a b c", RuntimeError(SECRET), 2)
    async with asgi_client(scripted_app(backend)) as client:
        response = await client.post("/v1/completions", json={"model": "m", "prompt": "x"})
    assert_envelope(response, 500, code="internal_error")
    assert "secret" not in response.text


class FailsToLoad(ScriptedBackend):
    async def load(self) -> None:
        raise BackendError("the weights are corrupt")


class NeverLoads(ScriptedBackend):
    async def load(self) -> None:
        await asyncio.Event().wait()


async def test_model_still_loading_or_failed_is_503() -> None:
    models = ModelRegistry(
        [
            ServedModel("ok", ScriptedBackend("ok")),
            ServedModel("broken", FailsToLoad("broken")),
            ServedModel("later", NeverLoads("later")),  # never reached: loads are in order
        ]
    )
    app = create_app(GatewayConfig(ServerSettings(), (), Path("inline.toml")), models)
    async with asgi_client(app) as client:
        deadline = time.monotonic() + 10
        while (await client.get("/ready")).json()["models"]["broken"] != "failed":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["models"] == {"ok": "ready", "broken": "failed", "later": "loading"}
        r = await client.post("/v1/completions", json={"model": "later", "prompt": "x"})
        assert_envelope(r, 503, param="model", code="model_not_ready")
        assert r.headers["retry-after"]
        r = await client.post("/v1/completions", json={"model": "broken", "prompt": "x"})
        error = assert_envelope(r, 503, param="model", code="model_unavailable")
        assert "corrupt" in error["message"]
        r = await client.post("/v1/completions", json={"model": "ok", "prompt": "x"})
        assert r.status_code == 200


async def test_api_key_and_body_limit_envelopes() -> None:
    settings = ServerSettings(api_keys=("sk-test",), max_body_bytes=2048)
    async with asgi_client(scripted_app(ScriptedBackend("m"), settings)) as client:
        body = {"model": "m", "prompt": "x"}
        r = await client.post("/v1/completions", json=body)
        assert_envelope(r, 401, code="invalid_api_key")
        r = await client.post(
            "/v1/completions", json=body, headers={"authorization": "Bearer wrong"}
        )
        assert_envelope(r, 401, code="invalid_api_key")
        auth = {"authorization": "Bearer sk-test"}
        assert (await client.post("/v1/completions", json=body, headers=auth)).status_code == 200
        assert (await client.get("/health")).status_code == 200  # open for load balancers
        r = await client.post("/v1/completions", json={**body, "prompt": "x" * 5000}, headers=auth)
        assert_envelope(r, 413, code="request_too_large")
