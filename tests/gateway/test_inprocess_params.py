"""Request validation and the refusals that come before any generation, in process:
the real app (`create_app`) through httpx.ASGITransport, over a scripted backend. Every
bad field is a 400 envelope naming it, and the backend is never called."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from backends.base import Capabilities
from tests.support.inprocess import ScriptedBackend, asgi_client, scripted_app
from tests.support.wire import assert_envelope

pytestmark = pytest.mark.anyio

EVERYTHING = Capabilities(
    token_prompts=True, logprobs=True, echo=True, suffix=True, chat_template=True
)
CHAT = [{"role": "user", "content": "x"}]


async def post(
    path: str, body: Any, caps: Capabilities = EVERYTHING, **kw: Any
) -> tuple[httpx.Response, ScriptedBackend]:
    backend = ScriptedBackend("m", capabilities=caps)
    async with asgi_client(scripted_app(backend)) as client:
        if "content" in kw:
            response = await client.post(path, **kw)
        else:
            response = await client.post(path, json=body, **kw)
    return response, backend


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "hot"),
        ("temperature", 2.5),
        ("temperature", -1),
        ("top_p", 1.5),
        ("top_p", "x"),
        ("max_tokens", -1),
        ("max_tokens", 1.5),
        ("max_tokens", "ten"),
        ("n", 0),
        ("n", 129),
        ("n", True),
        ("stop", [f"s{i}" for i in range(17)]),  # more than any limit
        ("stop", 7),
        ("stop", [1]),
        ("seed", "abc"),
        ("seed", 1.5),
        ("stream", "yes"),
        ("echo", "yes"),
        ("presence_penalty", 3),
        ("frequency_penalty", -2.5),
        ("logit_bias", {"abc": 1}),
        ("logit_bias", {"5": 101}),
        ("logit_bias", {"-1": 1}),
        ("logit_bias", [1]),
        ("logprobs", 6),
        ("logprobs", -1),
        ("best_of", 0),
        ("best_of", 21),
        ("user", 5),
        ("suffix", 5),
        ("stream_options", {"include_usage": True}),  # without stream
        ("prompt", 5),
        ("prompt", []),
        ("prompt", [[]]),
        ("prompt", [1, "a"]),
        ("prompt", [["a"]]),
        ("model", 5),
    ],
)
async def test_bad_completion_parameter_is_400_naming_it(field: str, value: object) -> None:
    body = {"model": "m", "prompt": "hi", "max_tokens": 1, field: value}
    response, backend = await post("/v1/completions", body)
    error = assert_envelope(response, 400, param=field)
    assert error["type"] == "invalid_request_error"
    assert not backend.calls.requests


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 3),
        ("top_p", "x"),
        ("n", 0),
        ("max_tokens", -1),
        ("max_completion_tokens", 1.5),
        ("stop", [1]),
        ("logit_bias", {"a": 1}),
        ("presence_penalty", 9),
        ("seed", "s"),
        ("logprobs", "yes"),
        ("top_logprobs", 21),
        ("stream_options", {"include_usage": True}),
        ("stream_options", "usage"),
        ("user", 3),
    ],
)
async def test_bad_chat_parameter_is_400_naming_it(field: str, value: object) -> None:
    body: dict[str, Any] = {"model": "m", "messages": CHAT, field: value}
    if field == "top_logprobs":
        body["logprobs"] = True
    if field == "stream_options" and not isinstance(value, dict):
        body["stream"] = True
    response, backend = await post("/v1/chat/completions", body)
    assert_envelope(response, 400, param=field)
    assert not backend.calls.requests


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ("hello", "messages"),
        ([5], "messages[0]"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0].content"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content",
        ),
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "user", "content": "x", "name": 5}], "messages[0].name"),
        ([{"role": "user", "content": "x"}, {"role": "system"}], "messages[1].content"),
    ],
)
async def test_bad_messages_are_400_naming_the_message(messages: object, param: str) -> None:
    response, backend = await post("/v1/chat/completions", {"model": "m", "messages": messages})
    assert_envelope(response, 400, param=param)
    assert not backend.calls.requests


async def test_assistant_message_may_have_no_content() -> None:
    messages = [*CHAT, {"role": "assistant", "content": None}, *CHAT]
    response, backend = await post("/v1/chat/completions", {"model": "m", "messages": messages})
    assert response.status_code == 200, response.text
    assert [m.content for m in backend.calls.requests[0].messages] == ["x", "", "x"]


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
async def test_non_finite_numbers_are_400(literal: str) -> None:
    raw = f'{{"model": "m", "prompt": "x", "temperature": {literal}}}'.encode()
    response, backend = await post(
        "/v1/completions", None, content=raw, headers={"content-type": "application/json"}
    )
    assert_envelope(response, 400, param="temperature")
    assert not backend.calls.requests


async def test_missing_required_fields() -> None:
    assert_envelope((await post("/v1/completions", {"prompt": "x"}))[0], 400, param="model")
    assert_envelope((await post("/v1/completions", {"model": "m"}))[0], 400, param="prompt")
    r, _ = await post("/v1/completions", {"model": "m", "prompt": None})
    assert_envelope(r, 400, param="prompt")
    r, _ = await post("/v1/chat/completions", {"model": "m"})
    assert_envelope(r, 400, param="messages")


@pytest.mark.parametrize("raw", [b"{bad json", b"[1, 2]", b"", b"\xff\xfe", b"null", b'"x"'])
async def test_malformed_json_is_400(raw: bytes) -> None:
    for path in ("/v1/completions", "/v1/chat/completions"):
        response, _ = await post(
            path, None, content=raw, headers={"content-type": "application/json"}
        )
        assert_envelope(response, 400)


async def test_unknown_model_is_404_naming_it() -> None:
    response, _ = await post("/v1/completions", {"model": "gpt-9", "prompt": "x"})
    error = assert_envelope(response, 404, param="model", code="model_not_found")
    assert "gpt-9" in error["message"]


async def test_unknown_route_and_method_are_envelopes() -> None:
    backend = ScriptedBackend("m")
    async with asgi_client(scripted_app(backend)) as client:
        assert_envelope(await client.get("/v1/nothing"), 404)
        assert_envelope(await client.get("/v1/completions"), 405)
        assert_envelope(await client.get("/v1/models/nope"), 404, code="model_not_found")


async def test_request_id_is_echoed_or_made() -> None:
    async with asgi_client(scripted_app(ScriptedBackend("m"))) as client:
        r = await client.get("/v1/models", headers={"x-request-id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        for unsafe in ("", "x" * 200, "a b", "evil\u00e9"):
            r = await client.get("/v1/models", headers={"x-request-id": unsafe.encode()})
            assert r.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "logprobs": 0}, "logprobs"),
        ({"prompt": "x", "n": 1, "best_of": 2}, "best_of"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
    ],
)
async def test_what_the_backend_cannot_do_is_400_before_generating(
    body: dict[str, Any], param: str
) -> None:
    response, backend = await post("/v1/completions", {"model": "m", **body}, Capabilities())
    error = assert_envelope(response, 400, param=param)
    assert "'m'" in error["message"]
    assert not backend.calls.requests


async def test_chat_refusals_follow_the_capabilities() -> None:
    chat = {"model": "m", "messages": CHAT}
    no_stream = Capabilities(streaming=False, chat_template=True)
    cases: list[tuple[str, dict[str, Any], Capabilities, str]] = [
        ("/v1/chat/completions", chat, Capabilities(), "messages"),
        (
            "/v1/chat/completions",
            {**chat, "logprobs": True},
            Capabilities(chat_template=True),
            "logprobs",
        ),
        ("/v1/chat/completions", {**chat, "stream": True}, no_stream, "stream"),
        ("/v1/completions", {"model": "m", "prompt": "x", "stream": True}, no_stream, "stream"),
    ]
    for path, body, caps, param in cases:
        response, backend = await post(path, body, caps)
        error = assert_envelope(response, 400, param=param)
        assert not backend.calls.requests
        if param == "messages":
            assert "chat template" in error["message"] and "chat_template" in error["message"]


async def test_best_of_rules() -> None:
    r, _ = await post("/v1/completions", {"model": "m", "prompt": "x", "n": 3, "best_of": 2})
    assert_envelope(r, 400, param="best_of")
    body = {"model": "m", "prompt": "x", "n": 1, "best_of": 2, "stream": True}
    r, backend = await post("/v1/completions", body)
    error = assert_envelope(r, 400, param="best_of")
    assert "stream" in error["message"].lower()
    assert not backend.calls.requests


async def test_top_logprobs_needs_logprobs() -> None:
    body = {"model": "m", "messages": CHAT, "top_logprobs": 2}
    r, _ = await post("/v1/chat/completions", body)
    assert_envelope(r, 400, param="top_logprobs")


async def test_sampling_parameters_reach_the_backend_as_given() -> None:
    body = {
        "model": "m",
        "prompt": "x",
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "presence_penalty": 1,
        "frequency_penalty": -1,
        "logit_bias": {"5": -100, "7": 2.5},
        "seed": 11,
        "stop": ["a", "", "b"],
        "top_k": 4,
        "min_p": 0.1,
        "repeat_penalty": 1.2,
    }
    r, backend = await post("/v1/completions", body)
    assert r.status_code == 200, r.text
    params = backend.calls.requests[0].params
    assert (params.max_tokens, params.temperature, params.top_p) == (7, 0.5, 0.9)
    assert (params.presence_penalty, params.frequency_penalty) == (1.0, -1.0)
    assert dict(params.logit_bias) == {5: -100.0, 7: 2.5}
    assert (params.seed, params.stop) == (11, ("a", "b"))
    assert (params.top_k, params.min_p, params.repeat_penalty) == (4, 0.1, 1.2)
    r, backend = await post("/v1/completions", {"model": "m", "prompt": "x"})
    assert backend.calls.requests[0].params.max_tokens == 16  # OpenAI's default
    r, backend = await post("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": None})
    assert backend.calls.requests[0].params.max_tokens is None  # up to the context
    body = {"model": "m", "messages": CHAT, "max_completion_tokens": 3, "max_tokens": 9}
    r, backend = await post("/v1/chat/completions", body)
    assert backend.calls.requests[0].params.max_tokens == 3  # the newer name wins
    r, backend = await post("/v1/chat/completions", {"model": "m", "messages": CHAT})
    assert backend.calls.requests[0].params.max_tokens is None
