"""Tool calls in a chat template's own format: the three formats parse whole, streamed
and held back, and anything that is not exactly calls stays content."""

from __future__ import annotations

import itertools
import json

import pytest

from backends.base import Finished, TextDelta, ToolCall, Usage
from backends.llama_cpp.tool_formats import NativeCallCollector, may_open, parse_calls

NAMES = {"get_weather", "create_event"}
HERMES = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
LLAMA = '{"name": "get_weather", "parameters": {"city": "Oslo"}}'
MISTRAL = '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}]'


def ids() -> object:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def parse(text: str, parallel: bool = True) -> tuple[ToolCall, ...] | None:
    return parse_calls(text, NAMES, ids(), parallel)


@pytest.mark.parametrize(
    "text", [HERMES, LLAMA, MISTRAL, "<|python_tag|>" + LLAMA, "  \n" + HERMES + "\n"]
)
def test_each_format_parses_into_one_call(text: str) -> None:
    calls = parse(text)
    assert calls == (ToolCall("call_0", "get_weather", '{"city": "Oslo"}'),)


def test_several_calls_parse_in_order_and_parallel_false_keeps_the_first() -> None:
    second = '{"name": "create_event", "arguments": {"title": "x"}}'
    texts = [
        f"{HERMES}\n<tool_call>{second}</tool_call>",
        f"{LLAMA}; {second}",
        f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {{}}}}, {second}]',
    ]
    for text in texts:
        calls = parse(text)
        assert calls is not None and [c.name for c in calls] == ["get_weather", "create_event"]
        assert [c.id for c in calls] == ["call_0", "call_1"]
        one = parse(text, parallel=False)
        assert one is not None and [c.name for c in one] == ["get_weather"]


def test_arguments_written_as_a_json_string_are_read_as_the_object() -> None:
    calls = parse('<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": 1}"}</tool_call>')
    assert calls is not None and json.loads(calls[0].arguments) == {"city": 1}


@pytest.mark.parametrize(
    "text",
    [
        "Hello there",
        "Sure: " + HERMES,  # text before the call
        HERMES + " and then some text",  # text after it
        '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',  # bad JSON
        "<tool_call>" + LLAMA[:-3],  # never closed
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',  # not a tool
        '{"name": "get_weather", "arguments": [1, 2]}',  # arguments not an object
        '{"city": "Oslo"}',  # no name
        "[TOOL_CALLS] []",
        "[TOOL_CALLS] not json",
        "{not json",
    ],
)
def test_anything_but_exact_calls_is_not_a_call(text: str) -> None:
    assert parse(text) is None


def test_may_open_holds_only_what_can_still_become_an_opener() -> None:
    for text in ["", "  ", "<", "<tool_c", "[TOOL", "<|python", "{", " {\"na", HERMES[:20]]:
        assert may_open(text), text
    for text in ["Hi", "<tool_response>", "[TOOLS", "The {", "x{"]:
        assert not may_open(text), text


def deltas(text: str, size: int) -> list[TextDelta]:
    return [TextDelta(text[i : i + size], (i,)) for i in range(0, len(text), size)]


def stream(
    text: str, reason: str = "stop", size: int = 3
) -> tuple[list[tuple[int, TextDelta]], Finished]:
    """The text fed to a collector in pieces: what came out after which piece, and the
    finish."""
    collector = NativeCallCollector(NAMES, ids())
    out: list[tuple[int, TextDelta]] = []
    pieces = deltas(text, size)
    for i, piece in enumerate(pieces):
        for event in collector.feed(piece):
            assert isinstance(event, TextDelta)
            out.append((i, event))
    *rest, finished = collector.feed(Finished(reason, Usage(5, len(pieces))))  # type: ignore[arg-type]
    out += [(len(pieces), e) for e in rest if isinstance(e, TextDelta)]
    assert isinstance(finished, Finished)
    return out, finished


@pytest.mark.parametrize("text", [HERMES, LLAMA, MISTRAL])
@pytest.mark.parametrize("size", [1, 4, 1000])
def test_a_streamed_call_is_held_back_and_finishes_as_tool_calls(text: str, size: int) -> None:
    out, finished = stream(text, size=size)
    assert out == []
    assert finished.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in finished.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    assert finished.usage.completion_tokens == len(deltas(text, size))


def test_plain_text_streams_at_once() -> None:
    out, finished = stream("Hello, the weather is fine.", size=1)
    assert out[0] == (0, TextDelta("H", (0,)))  # not held: "H" opens no call
    assert "".join(d.text for _, d in out) == "Hello, the weather is fine."
    assert finished.finish_reason == "stop" and finished.tool_calls == ()


def test_text_that_only_began_like_a_call_is_released_when_it_stops_looking_like_one() -> None:
    out, finished = stream("<tool_response> is a tag", size=2)
    assert out and out[0][0] == 3  # "<t", "oo", "l_" held; "<tool_re" opens no call
    assert "".join(d.text for _, d in out) == "<tool_response> is a tag"
    assert finished.finish_reason == "stop"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('<tool_call>{"name": "get_weather", "arguments": {"ci', "length"),  # cut short
        ('<tool_call>{"name": "nope", "arguments": {}}</tool_call>', "stop"),  # malformed
        (HERMES, "length"),  # complete but the answer ran out of tokens
    ],
)
def test_an_unparseable_or_cut_call_comes_out_as_content(text: str, reason: str) -> None:
    out, finished = stream(text, reason)
    assert "".join(d.text for _, d in out) == text
    assert finished.finish_reason == reason and finished.tool_calls == ()


def test_prompt_echo_passes_through_the_collector() -> None:
    collector = NativeCallCollector(NAMES, ids())
    echo = TextDelta("{prompt", (1,), is_prompt=True)
    assert collector.feed(echo) == [echo]
