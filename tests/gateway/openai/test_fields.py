"""No silent ignoring: fields that ask for something a backend cannot do are a 400
naming the field, unless the backend declares the feature; fields that change nothing
are accepted; unknown fields are ignored and their names logged at debug level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from backends.base import Capabilities
from gateway.openai.fields import CHAT_KNOWN, COMPLETION_KNOWN
from tests.support.inprocess import ScriptedBackend, asgi_client, scripted_app
from tests.support.wire import assert_envelope

pytestmark = pytest.mark.anyio

CAPS = Capabilities(token_prompts=True, logprobs=True, echo=True, chat_template=True)
CHAT = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
SPEC = Path(__file__).parents[2] / "support" / "openai_spec" / "openapi-subset.json"


async def post(
    path: str, fields: dict[str, Any], caps: Capabilities = CAPS
) -> tuple[httpx.Response, ScriptedBackend]:
    body: dict[str, Any] = {"model": "m", "max_tokens": 2}
    body.update({"prompt": "hi"} if path == "/v1/completions" else {"messages": CHAT})
    body.update(fields)
    backend = ScriptedBackend("m", capabilities=caps)
    async with asgi_client(scripted_app(backend)) as client:
        response = await client.post(path, json=body)
    return response, backend


REFUSED_CHAT = [
    ("response_format", {"type": "json_object"}, "response_format"),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}, "response_format"),
    ("tools", [TOOL], "tools"),
    ("tool_choice", "required", "tools"),
    ("tool_choice", {"type": "function", "function": {"name": "f"}}, "tools"),
    ("parallel_tool_calls", False, "tools"),
    ("functions", [{"name": "f", "parameters": {}}], "functions"),
    ("function_call", {"name": "f"}, "functions"),
    ("audio", {"voice": "alloy", "format": "wav"}, "audio"),
    ("modalities", ["text", "audio"], "audio"),
    ("prediction", {"type": "content", "content": "x"}, "prediction"),
    ("reasoning_effort", "high", "reasoning_effort"),
    ("verbosity", "low", "verbosity"),
    ("web_search_options", {}, "web_search"),
    ("moderation", {"model": "omni-moderation-latest"}, "moderation"),
    ("store", True, "store"),
    ("service_tier", "flex", "service_tier"),
    ("prompt_cache_retention", "24h", "cache_retention"),
    ("grammar", "root ::= [a-z]+", "grammar"),
    ("guided_json", {"type": "object"}, "grammar"),
    ("json_schema", {"type": "object"}, "grammar"),
]


# A tool_choice that names or requires a tool is only valid beside tools (as at OpenAI).
WITH = {"tool_choice": {"tools": [TOOL]}}


@pytest.mark.parametrize(("field", "value", "feature"), REFUSED_CHAT)
async def test_chat_fields_that_cannot_be_honoured_are_400(
    field: str, value: Any, feature: str
) -> None:
    response, backend = await post("/v1/chat/completions", {field: value, **WITH.get(field, {})})
    param = "tools" if field in WITH else field  # the first field that asks is named
    error = assert_envelope(response, 400, param=param, code="unsupported_parameter")
    assert f"'{param}'" in error["message"]
    assert not backend.calls.requests


@pytest.mark.parametrize(("field", "value", "feature"), REFUSED_CHAT)
async def test_a_backend_that_declares_the_feature_gets_the_request(
    field: str, value: Any, feature: str
) -> None:
    caps = Capabilities(chat_template=True, features=frozenset({feature}))
    fields = {field: value, **WITH.get(field, {})}
    response, backend = await post("/v1/chat/completions", fields, caps)
    assert response.status_code == 200, response.text
    assert len(backend.calls.requests) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("response_format", {"type": "json_object"}),
        ("guided_regex", "a+"),
        ("grammar", "root ::= x"),
    ],
)
async def test_completion_fields_that_cannot_be_honoured_are_400(field: str, value: Any) -> None:
    response, backend = await post("/v1/completions", {field: value})
    assert_envelope(response, 400, param=field, code="unsupported_parameter")
    assert not backend.calls.requests


@pytest.mark.parametrize(
    ("part", "feature"),
    [
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}, "image_input"),
        ({"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}, "audio_input"),
        ({"type": "file", "file": {"file_id": "f"}}, "file_input"),
    ],
)
async def test_non_text_content_parts_need_the_feature(part: dict[str, Any], feature: str) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "see"}, part]}]
    response, backend = await post("/v1/chat/completions", {"messages": messages})
    assert_envelope(response, 400, param="messages[0].content", code="unsupported_parameter")
    assert not backend.calls.requests
    caps = Capabilities(chat_template=True, features=frozenset({feature}))
    response, backend = await post("/v1/chat/completions", {"messages": messages}, caps)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            "messages[1].tool_calls",
        ),
        (
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": ""}},
            "messages[1].function_call",
        ),
        ({"role": "assistant", "audio": {"id": "a"}}, "messages[1].audio"),
        ({"role": "function", "name": "f", "content": "1"}, "messages[1].role"),
        ({"role": "assistant", "refusal": "no"}, "messages[1].refusal"),
    ],
)
async def test_history_that_carries_more_than_text_is_400(
    message: dict[str, Any], param: str
) -> None:
    response, backend = await post("/v1/chat/completions", {"messages": [*CHAT, message]})
    assert_envelope(response, 400, param=param)
    assert not backend.calls.requests


@pytest.mark.parametrize(
    "fields",
    [
        {"response_format": {"type": "text"}},
        {"tools": [], "tool_choice": "none"},
        {"tool_choice": "auto"},
        {"functions": None, "function_call": "none"},
        {"modalities": ["text"]},
        {"store": False, "metadata": {"k": "v"}},
        {"service_tier": "auto"},
        {"user": "u", "safety_identifier": "s", "prompt_cache_key": "k"},
        {"prompt_cache_retention": "in_memory"},
        {"audio": None, "prediction": None, "reasoning_effort": None, "parallel_tool_calls": None},
        {"messages": [*CHAT, {"role": "assistant", "content": "x", "tool_calls": []}, *CHAT]},
    ],
)
async def test_defaults_and_no_effect_fields_are_accepted(fields: dict[str, Any]) -> None:
    response, backend = await post("/v1/chat/completions", fields)
    assert response.status_code == 200, response.text
    assert len(backend.calls.requests) == 1


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_unknown_fields_are_ignored_and_logged_at_debug(path: str) -> None:
    with capture_logs() as logs:
        response, _ = await post(path, {"frobnicate": 1, "x" * 500: True})
    assert response.status_code == 200, response.text
    notes = [e for e in logs if e["event"] == "ignoring unknown request fields"]
    assert len(notes) == 1 and notes[0]["log_level"] == "debug"
    assert notes[0]["fields"] == ["frobnicate", "x" * 64] and notes[0]["count"] == 2


async def test_known_fields_are_not_logged_as_unknown() -> None:
    with capture_logs() as logs:
        response, _ = await post("/v1/chat/completions", {"user": "u", "metadata": {}})
    assert response.status_code == 200
    assert not [e for e in logs if e["event"] == "ignoring unknown request fields"]


def _spec_fields(name: str) -> set[str]:
    schemas = json.loads(SPEC.read_text())["components"]["schemas"]

    def props(node: dict[str, Any]) -> set[str]:
        if "$ref" in node:
            return props(schemas[node["$ref"].rsplit("/", 1)[-1]])
        out = set(node.get("properties", {}))
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in node.get(key, []):
                out |= props(sub)
        return out

    return props(schemas[name])


def test_every_openai_request_field_is_classified() -> None:
    """A field OpenAI adds to its schema must be classified here, not fall through to
    'unknown' (which would ignore it)."""
    assert _spec_fields("CreateCompletionRequest") - COMPLETION_KNOWN == set()
    assert _spec_fields("CreateChatCompletionRequest") - CHAT_KNOWN == set()
