"""JSON Schemas, tools and prompts for the structured-output tests: each schema covers
part of the supported subset, and bounds its strings and arrays so that a modest
max_tokens always fits a complete answer."""

from __future__ import annotations

from typing import Any

SCHEMAS: dict[str, dict[str, Any]] = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer"},
            "nickname": {"type": "string", "maxLength": 12},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "status": {
        "type": "object",
        "properties": {
            "status": {"enum": ["ok", "warning", "error"]},
            "version": {"const": 2},
            "ready": {"type": "boolean"},
        },
        "required": ["status", "version", "ready"],
        "additionalProperties": False,
    },
    "tags": {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 10},
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["tags"],
        "additionalProperties": False,
    },
    "address": {
        "$defs": {
            "place": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 16},
                    "zip": {"type": "string", "maxLength": 8},
                },
                "required": ["city"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/place"},
            "since": {"type": "string", "format": "date"},
        },
        "required": ["home", "since"],
        "additionalProperties": False,
    },
    "choice": {
        "type": "object",
        "properties": {
            "value": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 10}]},
            "note": {"type": ["string", "null"], "maxLength": 10},
        },
        "required": ["value", "note"],
        "additionalProperties": False,
    },
}

PROMPTS = [
    "Describe a person as JSON.",
    "Give me the status of the build.",
    "Tag this article about sailing.",
    "Where does Alice live?",
    "Pick a value.",
    "Write JSON about a cat.",
    "What is the weather like?",
    "Summarise the news in JSON.",
    "List three colours.",
    "Tell me about Paris.",
    "Answer in JSON please.",
    "Who won the match?",
    "Describe your favourite food.",
    "What time is it?",
    "Give me a random fact.",
    "Explain recursion briefly.",
    "Name a famous painter.",
    "What is two plus two?",
    "Invent a product.",
    "Hello!",
]

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_event",
            "description": "Put an event in the calendar.",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "maxLength": 20},
                    "day": {"type": "string", "format": "date"},
                    "guests": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": 10},
                        "maxItems": 2,
                    },
                },
                "required": ["title", "day"],
                "additionalProperties": False,
            },
        },
    },
]
TOOL_PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
