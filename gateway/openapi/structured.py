"""The structured-output and tool fields of the chat and completion request schemas
(see the README's "Structured output and tools")."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


RESPONSE_FORMAT: Schema = nullable(
    {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"enum": ["text", "json_object", "json_schema"]},
            "json_schema": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    "schema": {"type": "object", "description": "JSON Schema (a subset)."},
                    "strict": nullable({"type": "boolean"}),
                },
            },
        },
        "description": "Structured output, for models whose backend enforces it (llama_cpp): "
        "any JSON object, or JSON valid against a schema within the supported subset.",
    }
)


TOOL_FIELDS: Schema = {
    "tools": nullable(
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "function"],
                "properties": {
                    "type": {"const": "function"},
                    "function": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                            "description": {"type": "string"},
                            "parameters": {"type": "object"},
                        },
                    },
                },
            },
            "description": "Functions the model may call (backends that declare tools).",
        }
    ),
    "tool_choice": nullable(
        {
            "anyOf": [
                {"enum": ["none", "auto", "required"]},
                {
                    "type": "object",
                    "required": ["type", "function"],
                    "properties": {
                        "type": {"const": "function"},
                        "function": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string"}},
                        },
                    },
                },
            ],
            "description": "required / a named function: the answer is one call.",
        }
    ),
    "parallel_tool_calls": nullable({"type": "boolean", "default": True}),
}
