"""The `[limits]` settings: read from the configuration, and enforced while a request
is parsed (before anything is tokenised), each refusal naming the field and the
setting. Also the checks against the model's vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.base import Capabilities
from gateway.app import create_app
from gateway.config import ConfigFileError, GatewayConfig, ServerSettings, parse_config
from gateway.limits import LimitsSettings
from gateway.registry import ModelRegistry, ServedModel
from tests.support.inprocess import ScriptedBackend, asgi_client
from tests.support.wire import assert_envelope

CAPS = Capabilities(token_prompts=True, logprobs=True, echo=True, suffix=True, chat_template=True)
MODELS = [{"id": "m", "backend": "llama_cpp", "options": {}}]


# -- configuration ----------------------------------------------------------------------


def test_limits_default_when_the_section_is_absent() -> None:
    config = parse_config({"models": MODELS}, Path("g.toml"), {})
    assert config.limits == LimitsSettings()
    assert config.limits.max_stop == 16


def test_limits_are_read_from_the_section() -> None:
    raw = {"models": MODELS, "limits": {"max_prompts": 8, "max_stop_chars": 32}}
    limits = parse_config(raw, Path("g.toml"), {}).limits
    assert (limits.max_prompts, limits.max_stop_chars, limits.max_messages) == (8, 32, 1000)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"max_prompts": 0}, "limits.max_prompts"),
        ({"max_prompts": "8"}, "limits.max_prompts"),
        ({"max_stop": True}, "limits.max_stop"),
        ({"max_prompt_chars": 2**40}, "limits.max_prompt_chars"),
        ({"max_tokens": 5}, "limits.max_tokens"),
        ([1], "limits"),
    ],
)
def test_bad_limits_name_the_key(section: Any, key: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config({"models": MODELS, "limits": section}, Path("g.toml"), {})
    assert f"g.toml: {key}:" in str(info.value)


# -- enforcement ------------------------------------------------------------------------


async def post(
    path: str, fields: dict[str, Any], limits: LimitsSettings, caps: Capabilities = CAPS
) -> tuple[httpx.Response, ScriptedBackend]:
    body: dict[str, Any] = {"model": "m", "max_tokens": 2}
    body.update({"prompt": "hi"} if path == "/v1/completions" else {"messages": _chat(1)})
    body.update(fields)
    backend = ScriptedBackend("m", capabilities=caps)
    registry = ModelRegistry([ServedModel("m", backend, state="ready")])
    app = create_app(GatewayConfig(ServerSettings(), (), Path("t.toml"), limits), registry)
    async with asgi_client(app) as client:
        response = await client.post(path, json=body)
    return response, backend


def _chat(count: int, text: str = "x") -> list[dict[str, str]]:
    return [{"role": "user", "content": text} for _ in range(count)]


CASES = [
    # (path, fields, limits, param, setting)
    (
        "/v1/completions",
        {"prompt": ["a"] * 5},
        LimitsSettings(max_prompts=4),
        "prompt",
        "max_prompts",
    ),
    (
        "/v1/completions",
        {"prompt": [[1]] * 5},
        LimitsSettings(max_prompts=4),
        "prompt",
        "max_prompts",
    ),
    (
        "/v1/completions",
        {"prompt": "x" * 11},
        LimitsSettings(max_prompt_chars=10),
        "prompt",
        "max_prompt_chars",
    ),
    (
        "/v1/completions",
        {"prompt": ["x" * 6, "y" * 5]},
        LimitsSettings(max_prompt_chars=10),
        "prompt",
        "max_prompt_chars",
    ),
    (
        "/v1/completions",
        {"prompt": "x" * 6, "suffix": "y" * 5},
        LimitsSettings(max_prompt_chars=10),
        "prompt",
        "max_prompt_chars",
    ),
    (
        "/v1/chat/completions",
        {"messages": _chat(4)},
        LimitsSettings(max_messages=3),
        "messages",
        "max_messages",
    ),
    (
        "/v1/chat/completions",
        {"messages": _chat(3, "abcd")},
        LimitsSettings(max_chat_chars=10),
        "messages",
        "max_chat_chars",
    ),
    ("/v1/completions", {"stop": ["a", "b", "c"]}, LimitsSettings(max_stop=2), "stop", "max_stop"),
    (
        "/v1/chat/completions",
        {"stop": "abcdef"},
        LimitsSettings(max_stop_chars=5),
        "stop",
        "max_stop_chars",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "fields", "limits", "param", "setting"), CASES)
async def test_requests_over_a_limit_are_400_naming_field_and_setting(
    path: str, fields: dict[str, Any], limits: LimitsSettings, param: str, setting: str
) -> None:
    response, backend = await post(path, fields, limits)
    error = assert_envelope(response, 400, param=param, code="limit_exceeded")
    assert f"limits.{setting}" in error["message"]
    assert not backend.calls.requests


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "fields", "limits", "param", "setting"), CASES)
async def test_requests_at_the_default_limits_pass(
    path: str, fields: dict[str, Any], limits: LimitsSettings, param: str, setting: str
) -> None:
    response, backend = await post(path, fields, LimitsSettings())
    assert response.status_code == 200, response.text
    assert backend.calls.requests


@pytest.mark.anyio
async def test_sixteen_stop_strings_as_an_editor_sends_them() -> None:
    stops = [
        "\n\n",
        "\r\n\r\n",
        "/src/",
        "#- coding: utf-8",
        "```",
        "\nfunction",
        "\nclass",
        "\ndef",
        "\n//",
    ]
    response, backend = await post("/v1/completions", {"stop": stops}, LimitsSettings())
    assert response.status_code == 200, response.text
    assert backend.calls.requests[0].params.stop == tuple(stops)
    response, _ = await post("/v1/completions", {"stop": ["s"] * 17}, LimitsSettings())
    assert_envelope(response, 400, param="stop")


@pytest.mark.anyio
async def test_a_hundred_thousand_messages_are_refused_at_once() -> None:
    response, _ = await post(
        "/v1/chat/completions", {"messages": _chat(100_000, "")}, LimitsSettings()
    )
    assert_envelope(response, 400, param="messages", code="limit_exceeded")


# -- vocabulary -------------------------------------------------------------------------

VOCAB = Capabilities(token_prompts=True, chat_template=True, n_vocab=1000)


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_logit_bias_keys_must_be_in_the_vocabulary(path: str) -> None:
    response, backend = await post(path, {"logit_bias": {"999": 5}}, LimitsSettings(), VOCAB)
    assert response.status_code == 200, response.text
    assert backend.calls.requests[0].params.logit_bias == {999: 5.0}
    for key in ("1000", "4294967296", "2147483647"):
        response, backend = await post(path, {"logit_bias": {key: 5}}, LimitsSettings(), VOCAB)
        error = assert_envelope(response, 400, param="logit_bias")
        assert "0..999" in error["message"] or "not a token id" in error["message"]
        assert not backend.calls.requests


@pytest.mark.anyio
async def test_token_prompts_must_be_in_the_vocabulary() -> None:
    response, backend = await post("/v1/completions", {"prompt": [1, 999]}, LimitsSettings(), VOCAB)
    assert response.status_code == 200, response.text
    response, backend = await post(
        "/v1/completions", {"prompt": [[1], [5, 1000]]}, LimitsSettings(), VOCAB
    )
    assert_envelope(response, 400, param="prompt")
    assert not backend.calls.requests
