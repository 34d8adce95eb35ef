"""Structured output and tool calls on llama.cpp: what a request's constraint and
tools add to its prompt and grammar, and how a constrained answer becomes tool calls.

Tools are described to the model by a generic system prompt (the tool list as JSON
and the answer format), whatever its chat template:
- `required` / a named function: the output is constrained to one call,
  `{"name": ..., "arguments": {...}}`, its name from the list (or the named one) and
  its arguments valid against that tool's `parameters`;
- `auto`: the output is either a call, `{"tool_call": {"name": ..., "arguments":
  ...}}`, or plain text that does not start with "{";
- `none`: the tools are not shown and nothing is constrained.
A model whose chat template renders tools itself (it mentions `tools`) gets `auto`
the template's way instead: the tools and the call history go through the template
(prompts.py), nothing is constrained, and a call written in the template's format
is parsed back (tool_formats.py); plan says so with `tools = "native"`.
One call per answer (`parallel_tool_calls` may be true or false: one call is a valid
answer to both). Calls in the history (assistant `tool_calls`) are rendered back in
the same JSON shape the model was told to use; tool results keep the role `tool`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from backends.base import (
    ChatMessage,
    Finished,
    GenerationEvent,
    GenerationRequest,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from backends.llama_cpp.grammar import GrammarCache, check_schema, constraint_schema
from backends.llama_cpp.tool_formats import NativeCallCollector

# Plain text for `auto`: anything that does not open a JSON object.
_PLAIN_TEXT = "plain ::= ([^{ \\t\\n] [^\\x00]*)?\n"


@dataclass(frozen=True, slots=True)
class Plan:
    request: GenerationRequest
    grammar: str | None = None
    tools: str | None = None  # "forced" or "auto" when the answer may be a call


def plan(
    request: GenerationRequest, cache: GrammarCache, vocab: Any, native_tools: bool = False
) -> Plan:
    """The request as the model sees it (tools prompt added) and its grammar. Raises
    `InvalidRequest` naming the field for a schema outside the supported subset.
    `native_tools`: the chat template renders tools itself."""
    mode = request.tool_choice.mode
    if native_tools and request.tools and mode == "auto":
        for i, tool in enumerate(request.tools):
            check_schema(_parameters(tool), f"tools[{i}].function.parameters")
        return Plan(request, None, "native")
    if request.tools and mode != "none":
        tools = _chosen(request)
        forced = mode in ("required", "function")
        call = _call_schema(tools, cache, vocab)
        if forced:
            grammar = cache.grammar(call, "tools", vocab)
        else:
            wrapped = {
                "type": "object",
                "properties": {"tool_call": call},
                "required": ["tool_call"],
                "additionalProperties": False,
            }
            gbnf = cache.grammar(wrapped, "tools", vocab)
            grammar = (
                re.sub(r"^root ::=", "call-root ::=", gbnf, count=1, flags=re.M)
                + "\nroot ::= call-root | plain\n"
                + _PLAIN_TEXT
            )
        messages = (_tools_prompt(tools, forced), *_history(request.messages))
        return Plan(
            replace(request, messages=_merge_system(messages)),
            grammar,
            "forced" if forced else "auto",
        )
    messages = request.messages
    if any(m.tool_calls for m in messages):
        request = replace(request, messages=_history(messages))
    if request.constraint is not None:
        schema, param = constraint_schema(request.constraint)
        return Plan(request, cache.grammar(schema, param, vocab))
    return Plan(request)


def _chosen(request: GenerationRequest) -> tuple[ToolSpec, ...]:
    if request.tool_choice.mode != "function":
        return request.tools
    return tuple(t for t in request.tools if t.name == request.tool_choice.name)


def _parameters(tool: ToolSpec) -> Mapping[str, Any]:
    return tool.parameters or {"type": "object"}


def _call_schema(tools: tuple[ToolSpec, ...], cache: GrammarCache, vocab: Any) -> dict[str, Any]:
    # Each tool's parameters are checked alone first, so that a refusal names it.
    for i, tool in enumerate(tools):
        check_schema(_parameters(tool), f"tools[{i}].function.parameters")
    options = []
    for tool in tools:
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": _parameters(tool)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def _tools_prompt(tools: tuple[ToolSpec, ...], forced: bool) -> ChatMessage:
    listed = json.dumps(
        [
            {"name": t.name, "description": t.description or "", "parameters": _parameters(t)}
            for t in tools
        ],
        ensure_ascii=False,
    )
    if forced:
        how = (
            'Answer with one function call only, as a JSON object: {"name": <function '
            'name>, "arguments": <an object of its parameters>}.'
        )
    else:
        how = (
            'To call a function, answer with only a JSON object: {"tool_call": {"name": '
            '<function name>, "arguments": <an object of its parameters>}}. Otherwise '
            "answer in plain text."
        )
    return ChatMessage("system", f"You can call these functions:\n{listed}\n{how}")


def _merge_system(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    """One system message first: the tools prompt, then the client's own system text."""
    first, rest = messages[0], list(messages[1:])
    if rest and rest[0].role in ("system", "developer"):
        own = rest.pop(0)
        first = ChatMessage("system", f"{own.content}\n\n{first.content}")
    return (first, *rest)


def call_text(call: ToolCall) -> str:
    return json.dumps({"name": call.name, "arguments": _loads(call.arguments)}, ensure_ascii=False)


def _loads(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _history(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    """Assistant tool calls become their JSON text, as the model was told to write it."""
    out = []
    for m in messages:
        if m.tool_calls:
            calls = "\n".join(call_text(c) for c in m.tool_calls)
            text = f"{m.content}\n{calls}" if m.content else calls
            m = replace(m, content=text, tool_calls=())
        out.append(m)
    return tuple(out)


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse_call(text: str, mode: str) -> ToolCall | None:
    """The call in a constrained answer, or None (plain text, or cut short)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if mode == "auto":
        value = value.get("tool_call") if isinstance(value, dict) else None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = json.dumps(value.get("arguments", {}), ensure_ascii=False)
    return ToolCall(new_call_id(), value["name"], arguments)


class CallCollector:
    """Holds back the text of an answer that is (or may be) a tool call and turns it
    into `Finished.tool_calls`; plain text passes through unchanged."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.held: list[TextDelta] = []
        self.passing = False

    def feed(self, event: GenerationEvent) -> list[GenerationEvent]:
        if isinstance(event, TextDelta):
            if self.passing or event.is_prompt:
                return [event]
            self.held.append(event)
            text = "".join(d.text for d in self.held).lstrip()
            if self.mode == "auto" and text and not text.startswith("{"):
                self.passing = True
                held, self.held = self.held, []
                return list(held)
            return []
        text = "".join(d.text for d in self.held)
        call = parse_call(text, self.mode) if event.finish_reason == "stop" else None
        if call is not None:
            return [Finished("tool_calls", event.usage, (call,))]
        return [*self.held, event]  # cut short: the text as it is


def collector(plan: Plan, request: GenerationRequest) -> CallCollector | NativeCallCollector:
    """What turns the answer of a plan with tools into tool calls."""
    if plan.tools == "native":
        names = {t.name for t in request.tools}
        return NativeCallCollector(names, new_call_id, request.parallel_tool_calls)
    return CallCollector(plan.tools or "forced")
