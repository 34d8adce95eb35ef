"""Tool calls written in a chat template's own format (`tool_choice = "auto"` on a
model whose template renders `tools`), parsed into neutral `ToolCall`s.

Detection rule: an answer is a call only when, leading whitespace aside, it STARTS
with one of these openers and the whole answer parses as that format:
- Hermes / Qwen2.5: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one
  block or several (whitespace between them);
- Mistral: `[TOOL_CALLS]` then a JSON array of `{"name": ..., "arguments": {...}}`;
- Llama 3.1: a JSON object `{"name": ..., "parameters": {...}}` (or "arguments"),
  optionally after `<|python_tag|>`; several objects may be separated by ";".
Every call must name one of the request's tools and carry an object of arguments;
anything else (text before the opener, bad JSON, an unknown name, text after the
call) is content, as the model wrote it. With `parallel_tool_calls = false` only the
first call is kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from backends.base import Finished, GenerationEvent, TextDelta, ToolCall

OPENERS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "{")
_HERMES = re.compile(r"\s*<tool_call>(.*?)</tool_call>\s*", re.S)


def parse_calls(
    text: str, names: Collection[str], new_id: Any, parallel: bool = True
) -> tuple[ToolCall, ...] | None:
    """The calls the whole `text` makes, or None when it is not (only) calls."""
    body = text.strip()
    values: list[Any] | None
    if body.startswith("<tool_call>"):
        values = _hermes(body)
    elif body.startswith("[TOOL_CALLS]"):
        array = _json(body[len("[TOOL_CALLS]") :])
        values = array if isinstance(array, list) and array else None
    elif body.startswith("<|python_tag|>") or body.startswith("{"):
        values = _llama(body.removeprefix("<|python_tag|>"))
    else:
        return None
    if values is None:
        return None
    calls = []
    for value in values:
        call = _call(value, names, new_id)
        if call is None:
            return None
        calls.append(call)
    return tuple(calls[:1] if not parallel else calls)


def may_open(text: str) -> bool:
    """Whether `text` (an answer so far) may still turn out to be a call: leading
    whitespace aside, it starts with an opener or is the beginning of one."""
    body = text.lstrip()
    return not body or any(body.startswith(o) or o.startswith(body) for o in OPENERS)


def _hermes(body: str) -> list[Any] | None:
    values, pos = [], 0
    while pos < len(body):
        match = _HERMES.match(body, pos)
        if match is None:
            return None
        values.append(_json(match.group(1)))
        pos = match.end()
    return values or None


def _llama(body: str) -> list[Any] | None:
    decoder = json.JSONDecoder()
    values, pos, body = [], 0, body.strip()
    while pos < len(body):
        try:
            value, end = decoder.raw_decode(body, pos)
        except ValueError:
            return None
        values.append(value)
        pos = end
        rest = body[pos:].lstrip()
        if rest.startswith(";"):
            rest = rest[1:].lstrip()
        pos = len(body) - len(rest)
    return values or None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _call(value: Any, names: Collection[str], new_id: Any) -> ToolCall | None:
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some templates' models write the object's text
        arguments = _json(arguments)
    if not isinstance(arguments, dict):
        return None
    return ToolCall(new_id(), value["name"], json.dumps(arguments, ensure_ascii=False))


class NativeCallCollector:
    """Streams plain text through at once, but holds back an answer that starts (or
    may start) with a call's opener until the end: then it is the call(s), as a
    finish with `tool_calls`, or (unparseable, cut short) the text it was."""

    def __init__(self, names: Collection[str], new_id: Any, parallel: bool = True) -> None:
        self.names, self.new_id, self.parallel = names, new_id, parallel
        self.held: list[TextDelta] = []
        self.passing = False

    def feed(self, event: GenerationEvent) -> list[GenerationEvent]:
        if isinstance(event, TextDelta):
            if self.passing or event.is_prompt:
                return [event]
            self.held.append(event)
            if not may_open("".join(d.text for d in self.held)):
                self.passing = True
                held, self.held = self.held, []
                return list(held)
            return []
        if not isinstance(event, Finished) or not self.held:
            return [event]
        text = "".join(d.text for d in self.held)
        calls = None
        if event.finish_reason == "stop":
            calls = parse_calls(text, self.names, self.new_id, self.parallel)
        if calls:
            return [Finished("tool_calls", event.usage, calls)]
        return [*self.held, event]
