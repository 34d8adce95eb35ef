"""Hostile JSON bodies through the whole app in process (create_app over a scripted
backend, httpx.ASGITransport): each is a 400 envelope with the request id, never a
500, and the access line is written and encodable."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from backends.base import Capabilities
from tests.support.inprocess import ScriptedBackend, asgi_client, scripted_app
from tests.support.wire import assert_envelope

pytestmark = pytest.mark.anyio

CAPS = Capabilities(token_prompts=True, logprobs=True, echo=True, chat_template=True)
CHAT = [{"role": "user", "content": "hi"}]


async def post_raw(path: str, raw: bytes) -> tuple[httpx.Response, ScriptedBackend, list[Any]]:
    backend = ScriptedBackend("m", capabilities=CAPS)
    with capture_logs() as logs:
        async with asgi_client(scripted_app(backend)) as client:
            response = await client.post(
                path, content=raw, headers={"content-type": "application/json"}
            )
    return response, backend, logs


def assert_clean_400(
    response: httpx.Response, backend: ScriptedBackend, logs: list[Any], param: str | None
) -> None:
    assert_envelope(response, 400, param=param)
    assert response.headers["x-request-id"]
    assert not backend.calls.requests
    access = [e for e in logs if e["event"] == "request"]
    assert len(access) == 1 and access[0]["status"] == 400
    # What the JSON log renderer writes for that line can be encoded and written.
    structlog.processors.JSONRenderer()(None, "info", dict(access[0])).encode("utf-8")


def body(path: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "m", "max_tokens": 2}
    base.update({"prompt": "hi"} if path == "/v1/completions" else {"messages": CHAT})
    base.update(fields)
    return base


PATHS = ["/v1/completions", "/v1/chat/completions"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("path", "fields", "param"),
    [
        ("/v1/completions", {"prompt": "a\ud800"}, "prompt"),
        ("/v1/completions", {"prompt": ["ok", "a\ud800"]}, "prompt[1]"),
        ("/v1/completions", {"suffix": "\udfff"}, "suffix"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "a\ud800"}]},
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
            "messages[0].content[0].text",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x", "name": "\ud800"}]},
            "messages[0].name",
        ),
        ("/v1/completions", {"model": "m\ud800"}, "model"),
        ("/v1/chat/completions", {"model": "\ud800"}, "model"),
        ("/v1/completions", {"stop": ["\ud800"]}, "stop[0]"),
        ("/v1/chat/completions", {"user": "\udc00x"}, "user"),
    ],
)
async def test_lone_surrogates_are_400(
    path: str, fields: dict[str, Any], param: str, stream: bool
) -> None:
    raw = json.dumps(body(path, stream=stream, **fields)).encode()
    response, backend, logs = await post_raw(path, raw)
    assert_clean_400(response, backend, logs, param)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("where", ["top", "nested", "temperature"])
async def test_integer_literals_over_4300_digits_are_400(path: str, where: str) -> None:
    number = "9" * 4301
    template = {
        "top": '{"model": "m", "extra": %s, %s}',
        "nested": '{"model": "m", "metadata": {"a": [1, %s]}, %s}',
        "temperature": '{"model": "m", "temperature": %s, %s}',
    }[where]
    rest = '"prompt": "hi"' if path == "/v1/completions" else f'"messages": {json.dumps(CHAT)}'
    response, backend, logs = await post_raw(path, (template % (number, rest)).encode())
    assert_clean_400(response, backend, logs, None)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("depth", [80, 990, 2000, 200_000])
async def test_deep_nesting_is_400(path: str, depth: int) -> None:
    raw = json.dumps(body(path)).encode()[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
    response, backend, logs = await post_raw(path, raw)
    assert_clean_400(response, backend, logs, None)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "field",
    ["temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repeat_penalty"],
)
async def test_400_digit_numbers_in_float_fields_are_400(path: str, field: str) -> None:
    raw = json.dumps(body(path))[:-1] + f', "{field}": {"9" * 400}}}'
    response, backend, logs = await post_raw(path, raw.encode())
    assert_clean_400(response, backend, logs, field)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_k", 2**32),
        ("seed", 2**64),
        ("max_tokens", 10**30),
        ("logit_bias", {"4294967296": 100}),
        ("logit_bias", {" 5 ": 1}),
        ("logit_bias", {"1_0": 1}),
        ("logit_bias", {"\u0663": 1}),
        ("n", 10**50),
    ],
)
async def test_integers_that_would_wrap_are_400(path: str, field: str, value: Any) -> None:
    raw = json.dumps(body(path, **{field: value})).encode()
    response, backend, logs = await post_raw(path, raw)
    assert_clean_400(response, backend, logs, field)


async def test_out_of_range_token_prompts_are_400() -> None:
    raw = json.dumps(body("/v1/completions", prompt=[1, 2**32])).encode()
    response, backend, logs = await post_raw("/v1/completions", raw)
    assert_clean_400(response, backend, logs, "prompt")
