"""OpenAI's structured-output and tool fields, read into the neutral request types
(`OutputConstraint`, `ToolSpec`, `ToolChoice`, `ToolCall`) and written back out.

Whether the model honours them is the backend's business (`Capabilities.features`,
checked by `fields.refuse_unsupported`); here the shapes are checked, each mistake a
400 naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from backends.base import OutputConstraint, ToolCall, ToolChoice, ToolSpec
from gateway.errors import invalid

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def response_format(body: dict[str, Any]) -> OutputConstraint | None:
    value = body.get("response_format")
    if value is None:
        return None
    where = "response_format"
    if not isinstance(value, dict):
        raise invalid(f"Invalid '{where}': expected an object with a 'type'.", where)
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputConstraint("json_object")
    if kind != "json_schema":
        raise invalid(
            f"Invalid value for '{where}.type': expected one of text, json_object, json_schema.",
            f"{where}.type",
        )
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid(
            f"Missing required parameter: '{where}.json_schema' (an object with 'name' "
            "and 'schema').",
            f"{where}.json_schema",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise invalid(
            f"Invalid '{where}.json_schema.name': expected 1 to 64 letters, digits, '_' or '-'.",
            f"{where}.json_schema.name",
        )
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise invalid(
            f"Invalid type for '{where}.json_schema.schema': expected an object.",
            f"{where}.json_schema.schema",
        )
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid(
            f"Invalid type for '{where}.json_schema.strict': expected a boolean.",
            f"{where}.json_schema.strict",
        )
    return OutputConstraint("json_schema", schema, name, bool(strict))


@dataclass(frozen=True, slots=True)
class Tools:
    tools: tuple[ToolSpec, ...] = ()
    choice: ToolChoice = field(default_factory=ToolChoice)
    parallel: bool = True

    @property
    def forced(self) -> bool:
        return bool(self.tools) and self.choice.mode in ("required", "function")


def tools(body: dict[str, Any]) -> Tools:
    raw = body.get("tools")
    specs: list[ToolSpec] = []
    if raw is not None and not isinstance(raw, list):
        raise invalid("Invalid type for 'tools': expected an array of tools.", "tools")
    for i, item in enumerate(raw or []):
        where = f"tools[{i}]"
        if not isinstance(item, dict) or item.get("type") != "function":
            raise invalid(
                f'Invalid \'{where}\': expected {{"type": "function", "function": ...}}.',
                where,
            )
        fn = item.get("function")
        if not isinstance(fn, dict):
            raise invalid(f"Missing required parameter: '{where}.function'.", f"{where}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise invalid(
                f"Invalid '{where}.function.name': expected 1 to 64 letters, digits, '_' or '-'.",
                f"{where}.function.name",
            )
        if any(s.name == name for s in specs):
            raise invalid(f"Duplicate tool name '{name}' in '{where}'.", f"{where}.function.name")
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid(
                f"Invalid type for '{where}.function.description': expected a string.",
                f"{where}.function.description",
            )
        params = fn.get("parameters", {})
        if not isinstance(params, dict):
            raise invalid(
                f"Invalid type for '{where}.function.parameters': expected an object.",
                f"{where}.function.parameters",
            )
        specs.append(ToolSpec(name, description, params, fn.get("strict") is True))
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise invalid(
            "Invalid type for 'parallel_tool_calls': expected a boolean.", "parallel_tool_calls"
        )
    return Tools(tuple(specs), _choice(body.get("tool_choice"), specs), parallel is not False)


def _choice(value: Any, specs: list[ToolSpec]) -> ToolChoice:
    if value is None:
        return ToolChoice("auto" if specs else "none")
    if value in ("none", "auto", "required"):
        if value == "required" and not specs:
            raise invalid("'tool_choice' is 'required' but 'tools' is empty.", "tool_choice")
        return ToolChoice(value)
    fn = value.get("function") if isinstance(value, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(name, str):
        raise invalid(
            "Invalid 'tool_choice': expected none, auto, required or "
            '{"type": "function", "function": {"name": ...}}.',
            "tool_choice",
        )
    if not any(s.name == name for s in specs):
        raise invalid(f"'tool_choice' names '{name}', which is not in 'tools'.", "tool_choice")
    return ToolChoice("function", name)


def message_tool_calls(raw: dict[str, Any], where: str) -> tuple[ToolCall, ...]:
    """An assistant message's `tool_calls`, for the history."""
    value = raw.get("tool_calls")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid(
            f"Invalid type for '{where}.tool_calls': expected an array.", f"{where}.tool_calls"
        )
    calls = []
    for k, call in enumerate(value):
        at = f"{where}.tool_calls[{k}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(fn, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(fn.get("name"), str)
            or not isinstance(fn.get("arguments"), str)
        ):
            raise invalid(
                f'Invalid \'{at}\': expected {{"id", "type": "function", "function": '
                '{"name", "arguments" (a string)}}.',
                at,
            )
        calls.append(ToolCall(call["id"], fn["name"], fn["arguments"]))
    return tuple(calls)


def tool_call_id(raw: dict[str, Any], where: str) -> str | None:
    value = raw.get("tool_call_id")
    if raw.get("role") == "tool" and not isinstance(value, str):
        raise invalid(
            f"Missing required parameter: '{where}.tool_call_id'.", f"{where}.tool_call_id"
        )
    return value if isinstance(value, str) else None


def tool_calls_json(calls: tuple[ToolCall, ...], with_index: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        entry: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        out.append({"index": i, **entry} if with_index else entry)
    return out
