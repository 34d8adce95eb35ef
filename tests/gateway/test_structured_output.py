"""Structured output and tool calls through a real gateway process serving SmolLM2,
with the real `openai` SDK and the exact request bodies instructor and LangChain send."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai

from tests.support.schemas import SCHEMAS, TOOL_PARAMETERS, TOOLS
from tests.support.server import GatewayProcess
from tests.support.wire import assert_envelope

MODEL = "smollm2"


def schema_format(name: str) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMAS[name]}}


def test_json_schema_answers_validate_streamed_and_not(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Where does Alice live?"}]
    answer = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        response_format=schema_format("address"),  # type: ignore[arg-type]
        max_tokens=96,
        temperature=0,
    )
    assert answer.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), SCHEMAS["address"])

    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Pick a value."}],
        response_format=schema_format("choice"),  # type: ignore[arg-type]
        max_tokens=96,
        temperature=1,
        seed=3,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), SCHEMAS["choice"])


def test_cut_short_by_max_tokens_is_length(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a person."}],
        response_format=schema_format("person"),  # type: ignore[arg-type]
        max_tokens=3,
        temperature=0,
    )
    assert answer.choices[0].finish_reason == "length"
    assert (answer.choices[0].message.content or "").startswith("{")


def test_a_schema_outside_the_subset_is_a_400_naming_the_keyword(
    gateway: GatewayProcess,
) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a+"}},
        },
    }
    response = httpx.post(f"{gateway.base_url}/v1/chat/completions", json=body, timeout=60)
    error = assert_envelope(response, 400, param="response_format.json_schema.schema")
    assert "'pattern'" in error["message"]
    bad_type = {**body, "response_format": {"type": "yaml"}}
    response = httpx.post(f"{gateway.base_url}/v1/chat/completions", json=bad_type, timeout=60)
    assert_envelope(response, 400, param="response_format.type")


def test_streamed_tool_call_reassembles_to_the_non_streamed_call(client: openai.OpenAI) -> None:
    fields: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Plan a picnic with Bob on 2025-06-01."}],
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "create_event"}},
        "max_tokens": 96,
        "temperature": 0,
    }
    # The first call leaves its prompt in the KV cache; the two compared calls both
    # reuse it, so both decode from the same cached state (a prompt decoded in one
    # batch and one reused from cache may differ in the last bits of the logits).
    client.chat.completions.create(**{**fields, "max_tokens": 1})
    whole = client.chat.completions.create(**fields)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "create_event"
    jsonschema.validate(json.loads(call.function.arguments), TOOL_PARAMETERS["create_event"])

    done = []
    with client.chat.completions.stream(**fields) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.done":
                done.append((event.name, event.arguments))
        final = stream.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls"
    assert (streamed.function.name, streamed.function.arguments) == (
        call.function.name,
        call.function.arguments,
    )
    assert done == [(call.function.name, call.function.arguments)]


def test_required_tool_choice_calls_one_of_the_tools(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 12 plus 30?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=96,
        temperature=0,
    )
    (call,) = answer.choices[0].message.tool_calls or []
    assert answer.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), TOOL_PARAMETERS[call.function.name])


def test_the_tool_history_round_trip_is_accepted(client: openai.OpenAI) -> None:
    messages: Any = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Oslo", "unit": "celsius"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "12 degrees and sunny"},
    ]
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice="none", max_tokens=8
    )
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.prompt_tokens > 30


# What instructor (Mode.TOOLS) sends for `response_model=User`: the model's schema as a
# function, and tool_choice naming it.
INSTRUCTOR_TOOLS = {
    "messages": [{"role": "user", "content": "Extract: Jason is 25 years old."}],
    "model": MODEL,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "User",
                "description": "Correctly extracted `User` with all the required parameters "
                "with correct types",
                "parameters": {
                    "properties": {
                        "name": {"title": "Name", "type": "string"},
                        "age": {"title": "Age", "type": "integer"},
                    },
                    "required": ["age", "name"],
                    "type": "object",
                },
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "User"}},
    "max_tokens": 64,
    "temperature": 0,
}

# What LangChain's ChatOpenAI.with_structured_output(Joke) sends (method "json_schema").
LANGCHAIN_JSON_SCHEMA = {
    "messages": [{"content": "Tell me a joke about cats", "role": "user"}],
    "model": MODEL,
    "stream": False,
    "temperature": 0.0,
    "max_tokens": 128,
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "Joke",
            "description": "Joke to tell user.",
            "strict": False,
            "schema": {
                "properties": {
                    "setup": {
                        "description": "The setup of the joke",
                        "type": "string",
                        "maxLength": 60,
                    },
                    "punchline": {
                        "description": "The punchline to the joke",
                        "type": "string",
                        "maxLength": 60,
                    },
                    "rating": {
                        "anyOf": [{"type": "integer"}, {"type": "null"}],
                        "default": None,
                        "description": "How funny the joke is, from 1 to 10",
                    },
                },
                "required": ["setup", "punchline"],
                "type": "object",
                "additionalProperties": False,
            },
        },
    },
}


def test_instructor_and_langchain_bodies_get_the_shapes_they_parse(
    gateway: GatewayProcess,
) -> None:
    url = f"{gateway.base_url}/v1/chat/completions"
    answer = httpx.post(url, json=INSTRUCTOR_TOOLS, timeout=300).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "User"
    params = INSTRUCTOR_TOOLS["tools"][0]["function"]["parameters"]  # type: ignore[index]
    jsonschema.validate(json.loads(call["function"]["arguments"]), params)

    answer = httpx.post(url, json=LANGCHAIN_JSON_SCHEMA, timeout=300).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop"
    schema = LANGCHAIN_JSON_SCHEMA["response_format"]["json_schema"]["schema"]  # type: ignore[index]
    jsonschema.validate(json.loads(choice["message"]["content"]), schema)
