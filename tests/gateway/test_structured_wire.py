"""The OpenAI wire of structured output and tools, in process against a scripted
backend that declares the features: what reaches the backend, the 400s for malformed
fields, and how a backend's tool calls are written (whole and streamed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from backends.base import (
    Capabilities,
    Finished,
    GenerationEvent,
    GenerationRequest,
    OutputConstraint,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
)
from tests.support.inprocess import ScriptedBackend, asgi_client, scripted_app
from tests.support.wire import assert_envelope

pytestmark = pytest.mark.anyio

CAPS = Capabilities(chat_template=True, features=frozenset({"response_format", "tools"}))
USER = [{"role": "user", "content": "hi"}]
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
    },
}
CALL = ToolCall("call_1", "add", '{"a": 1}')


class CallingBackend(ScriptedBackend):
    """Answers every request with one tool call."""

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.calls.requests.append(request)
        yield Finished("tool_calls", Usage(3, 5), (CALL,))


async def post(
    body: dict[str, Any], backend: ScriptedBackend | None = None, path: str = "/v1/chat/completions"
) -> tuple[httpx.Response, ScriptedBackend]:
    backend = backend or ScriptedBackend("m", capabilities=CAPS)
    full = {"model": "m", "max_tokens": 4, **body}
    if path == "/v1/chat/completions":
        full.setdefault("messages", USER)
    else:
        full.setdefault("prompt", "hi")
    async with asgi_client(scripted_app(backend)) as client:
        return await client.post(path, json=full), backend


async def test_the_fields_reach_the_backend_as_neutral_values() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    history = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c0", "type": "function", "function": {"name": "add", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c0", "content": "3"},
    ]
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": schema, "strict": True},
    }
    response, backend = await post({"response_format": response_format})
    assert response.status_code == 200, response.text
    assert backend.calls.requests[0].constraint == OutputConstraint(
        "json_schema", schema, "x", True
    )
    response, backend = await post(
        {
            "messages": history,
            "tools": [ADD],
            "tool_choice": {"type": "function", "function": {"name": "add"}},
            "parallel_tool_calls": False,
        }
    )
    assert response.status_code == 200, response.text
    (request,) = backend.calls.requests
    assert request.constraint is None
    assert request.tools == (ToolSpec("add", "Add.", ADD["function"]["parameters"]),)  # type: ignore[index]
    assert request.tool_choice == ToolChoice("function", "add")
    assert request.parallel_tool_calls is False
    assert request.messages[1].tool_calls == (ToolCall("c0", "add", "{}"),)
    assert request.messages[2].role == "tool" and request.messages[2].tool_call_id == "c0"

    response, backend = await post(
        {"response_format": {"type": "json_object"}}, path="/v1/completions"
    )
    assert response.status_code == 200, response.text
    assert backend.calls.requests[0].constraint == OutputConstraint("json_object")


async def test_tools_without_a_choice_mean_auto_and_no_tools_mean_none() -> None:
    _, backend = await post({"tools": [ADD]})
    assert backend.calls.requests[0].tool_choice == ToolChoice("auto")
    _, backend = await post({})
    assert backend.calls.requests[0].tool_choice == ToolChoice("none")
    assert backend.calls.requests[0].constraint is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "sub"}}},
            "tool_choice",
        ),
        ({"tools": [ADD], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
        ({"tools": [ADD, ADD]}, "tools[1].function.name"),
        ({"tools": [ADD], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}},
            "response_format.json_schema.schema",
        ),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        # both would constrain the same output: never one silently dropped
        ({"tools": [ADD], "response_format": {"type": "json_object"}}, "response_format"),
        (
            {"messages": [*USER, {"role": "tool", "content": "3"}], "tools": [ADD]},
            "messages[1].tool_call_id",
        ),
        (
            {
                "messages": [*USER, {"role": "assistant", "tool_calls": [{"id": "c"}]}],
                "tools": [ADD],
            },
            "messages[1].tool_calls[0]",
        ),
    ],
)
async def test_malformed_fields_are_400_naming_them(body: dict[str, Any], param: str) -> None:
    response, backend = await post(body)
    assert_envelope(response, 400, param=param)
    assert not backend.calls.requests


async def test_a_backends_tool_call_is_the_message_and_the_finish_reason() -> None:
    response, _ = await post({"tools": [ADD]}, CallingBackend("m", capabilities=CAPS))
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a": 1}'},
            }
        ],
    }


async def test_a_streamed_tool_call_comes_in_its_own_chunk_before_the_finish() -> None:
    response, _ = await post(
        {"tools": [ADD], "stream": True}, CallingBackend("m", capabilities=CAPS)
    )
    events = [
        json.loads(line[6:])
        for line in response.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    deltas = [(e["choices"][0]["delta"], e["choices"][0]["finish_reason"]) for e in events]
    assert deltas[-2] == (
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 1}'},
                }
            ]
        },
        None,
    )
    assert deltas[-1] == ({}, "tool_calls")
