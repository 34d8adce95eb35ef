"""Every failure is an OpenAI error envelope with `message`, `type`, `param`, `code`,
the right status, and nothing of the server's internals in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from backends.errors import BackendError, Overloaded
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.registry import ModelRegistry, ServedModel
from tests.conftest import SMOL_ID
from tests.support.inprocess import ScriptedBackend, ThreadedServer
from tests.support.schema import validate
from tests.support.server import GatewayProcess


def assert_envelope(
    response: httpx.Response, status: int, param: str | None = None, code: str | None = None
) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    validate(body, "ErrorResponse")
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert "Traceback" not in response.text and "/site-packages/" not in response.text
    return error


def test_unknown_fields_are_ignored(gateway: GatewayProcess) -> None:
    body = {"model": SMOL_ID, "prompt": "hi", "max_tokens": 1, "some_future_field": {"x": 1}}
    assert httpx.post(f"{gateway.base_url}/v1/completions", json=body).status_code == 200


def test_unknown_model_is_404(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    r = httpx.post(f"{gateway.base_url}/v1/completions", json={"model": "gpt-9", "prompt": "x"})
    error = assert_envelope(r, 404, param="model", code="model_not_found")
    assert "gpt-9" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="x")


def test_prompt_longer_than_context_is_400(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    long_prompt = "hello " * 600  # the test config gives SmolLM2 a 512-token window
    r = httpx.post(
        f"{gateway.base_url}/v1/completions",
        json={"model": SMOL_ID, "prompt": long_prompt, "max_tokens": 10},
    )
    error = assert_envelope(r, 400, code="context_length_exceeded")
    assert "512" in error["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=SMOL_ID, prompt=long_prompt, stream=True)
    assert err.value.code == "context_length_exceeded"
    # prompt fits, but prompt + max_tokens does not
    r = httpx.post(
        f"{gateway.base_url}/v1/completions",
        json={"model": SMOL_ID, "prompt": "hello " * 200, "max_tokens": 400},
    )
    assert_envelope(r, 400, code="context_length_exceeded")


# -- failures inside the gateway, with a backend that fails on purpose -----------------


@pytest.fixture(scope="module")
def faulty_server() -> Iterator[ThreadedServer]:
    secret = RuntimeError("boom in /secret/path/engine.py line 42")
    models = ModelRegistry(
        [
            ServedModel("crash-early", ScriptedBackend("crash-early", fail_with=secret)),
            ServedModel("crash-late", ScriptedBackend("crash-late", "hello big world", secret, 2)),
            ServedModel(
                "backend-error",
                ScriptedBackend(
                    "backend-error", fail_with=BackendError("the engine ran out of memory")
                ),
            ),
            ServedModel("ok", ScriptedBackend("ok")),
            ServedModel("busy", ScriptedBackend("busy", fail_with=Overloaded("queue full", 2.4))),
        ]
    )
    config = GatewayConfig(
        ServerSettings(api_keys=("sk-test",), max_body_bytes=2048), (), Path("inline.toml")
    )
    with ThreadedServer(create_app(config, models)) as server:
        yield server


def _post(server: ThreadedServer, body: dict, key: str = "sk-test", **kw: object) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        **kw,
    )


def test_unexpected_failure_is_500_without_internals(faulty_server: ThreadedServer) -> None:
    r = _post(faulty_server, {"model": "crash-early", "prompt": "x"})
    error = assert_envelope(r, 500)
    assert error["type"] == "server_error"
    assert "secret" not in r.text and "engine.py" not in r.text


def test_backend_error_is_500_with_its_message(faulty_server: ThreadedServer) -> None:
    r = _post(faulty_server, {"model": "backend-error", "prompt": "x"})
    error = assert_envelope(r, 500)
    assert "out of memory" in error["message"]


def test_failure_mid_stream_ends_with_an_error_event(faulty_server: ThreadedServer) -> None:
    client = openai.OpenAI(
        base_url=f"{faulty_server.base_url}/v1", api_key="sk-test", max_retries=0
    )
    stream = client.completions.create(model="crash-late", prompt="x", stream=True)
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            received.append(chunk.choices[0].text)
    assert received == ["hello", " big"]
    assert "secret" not in str(err.value.body)


def test_api_key_is_required_when_configured(faulty_server: ThreadedServer) -> None:
    r = _post(faulty_server, {"model": "ok", "prompt": "x"}, key="wrong")
    assert_envelope(r, 401, code="invalid_api_key")
    assert _post(faulty_server, {"model": "ok", "prompt": "x"}).status_code == 200
    # health checks stay open for load balancers
    assert httpx.get(f"{faulty_server.base_url}/health").status_code == 200


def test_body_over_the_limit_is_413(faulty_server: ThreadedServer) -> None:
    r = _post(faulty_server, {"model": "ok", "prompt": "x" * 5000})
    assert_envelope(r, 413, code="request_too_large")

    def chunks() -> Iterator[bytes]:  # no content-length: the limit holds while reading
        yield b'{"model": "ok", "prompt": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    r = httpx.post(
        f"{faulty_server.base_url}/v1/completions",
        content=chunks(),
        headers={"authorization": "Bearer sk-test", "content-type": "application/json"},
    )
    assert_envelope(r, 413, code="request_too_large")


def test_overloaded_is_429_with_retry_after(faulty_server: ThreadedServer) -> None:
    r = _post(faulty_server, {"model": "busy", "prompt": "x"})
    error = assert_envelope(r, 429, code="rate_limit_exceeded")
    assert error["type"] == "rate_limit_error" and "queue full" in error["message"]
    assert r.headers["retry-after"] == "2"
    r = _post(faulty_server, {"model": "busy", "prompt": "x", "stream": True})
    assert_envelope(r, 429)  # refused before the stream starts, not inside it
