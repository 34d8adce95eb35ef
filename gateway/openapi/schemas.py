"""The component schemas of the gateway's OpenAPI document: request bodies with the
fields the wire layer honours and their ranges, response bodies, the error envelope."""

from __future__ import annotations

from typing import Any

from gateway.openapi.structured import RESPONSE_FORMAT, TOOL_FIELDS

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def number(low: float, high: float, default: float, text: str) -> Schema:
    return nullable(
        {"type": "number", "minimum": low, "maximum": high, "default": default, "description": text}
    )


def json_content(schema: Schema, text: str) -> Schema:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "4XX": {
        **json_content(
            ref("ErrorResponse"), "A client error (400, 401, 404, 413, 415, 429 ...)."
        ),
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
    },
    "5XX": {
        **json_content(ref("ErrorResponse"), "A server error (503 while loading, 500 unexpected)."),
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
    },
}

STOP = nullable(
    {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "maxItems": 16},
        ],
        "description": "Up to 16 strings (OpenAI: 4); never part of the returned text.",
    }
)

SAMPLING: dict[str, Schema] = {
    "temperature": number(0, 2, 1, "0 = greedy."),
    "top_p": number(0, 1, 1, "Nucleus sampling."),
    "presence_penalty": number(-2, 2, 0, "Over the generated tokens (last 64)."),
    "frequency_penalty": number(-2, 2, 0, "Over the generated tokens (last 64)."),
    "logit_bias": nullable(
        {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9]{1,9}$"},
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
            "description": "Token id -> bias; -100 bans the token.",
        }
    ),
    "seed": nullable({"type": "integer", "description": "Reproducible sampling."}),
    "stop": STOP,
    "stream": nullable({"type": "boolean", "default": False}),
    "stream_options": nullable(
        {
            "type": "object",
            "properties": {"include_usage": nullable({"type": "boolean"})},
            "description": "Only with stream = true.",
        }
    ),
    "user": nullable({"type": "string"}),
    "top_k": nullable(
        {"type": "integer", "minimum": 0, "default": 0, "description": "Extension; 0 = off."}
    ),
    "min_p": number(0, 1, 0, "Extension; 0 = off."),
    "repeat_penalty": number(0, 10, 1, "Extension; 1 = off."),
}


def requires(field: str, value: object, then: str) -> Schema:
    """`field` (when present and not null) is only allowed with `then` = `value`."""
    return {
        "if": {"required": [field], "properties": {field: {"not": {"type": "null"}}}},
        "then": {"required": [then], "properties": {then: {"const": value}}},
    }


TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}

COMPLETION_REQUEST: Schema = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        "model": {"type": "string"},
        "prompt": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
                TOKEN_IDS,
                {"type": "array", "items": TOKEN_IDS, "minItems": 1},
            ],
            "description": "Text, texts (one set of choices each), token ids, or lists of them.",
        },
        "max_tokens": nullable(
            {"type": "integer", "minimum": 0, "default": 16, "description": "null: to the context."}
        ),
        "n": nullable({"type": "integer", "minimum": 1, "maximum": 128, "default": 1}),
        "best_of": nullable(
            {"type": "integer", "minimum": 1, "maximum": 20, "description": ">= n; no stream."}
        ),
        "echo": nullable({"type": "boolean", "default": False}),
        "logprobs": nullable({"type": "integer", "minimum": 0, "maximum": 5}),
        "suffix": nullable(
            {"type": "string", "description": "Fill-in-the-middle (models with FIM tokens)."}
        ),
        "response_format": RESPONSE_FORMAT,
        **SAMPLING,
    },
    "allOf": [requires("stream_options", True, "stream")],
}

CONTENT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}

CONTENT = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": CONTENT_PART}],
    "description": "A string or text parts.",
}

MESSAGE: Schema = {
    "anyOf": [
        {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"enum": ["system", "developer", "user", "tool"]},
                "content": CONTENT,
                "name": nullable({"type": "string"}),
            },
        },
        {
            "type": "object",
            "required": ["role"],
            "properties": {
                "role": {"const": "assistant"},
                "content": nullable(CONTENT),
                "name": nullable({"type": "string"}),
            },
        },
    ]
}

CHAT_REQUEST: Schema = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": MESSAGE},
        "max_completion_tokens": nullable(
            {"type": "integer", "minimum": 0, "description": "Default: up to the context."}
        ),
        "max_tokens": nullable({"type": "integer", "minimum": 0}),
        "n": nullable({"type": "integer", "minimum": 1, "maximum": 128, "default": 1}),
        "logprobs": nullable({"type": "boolean", "default": False}),
        "top_logprobs": nullable(
            {"type": "integer", "minimum": 0, "maximum": 20, "description": "Needs logprobs."}
        ),
        "response_format": RESPONSE_FORMAT,
        **TOOL_FIELDS,
        **SAMPLING,
    },
    "allOf": [
        requires("stream_options", True, "stream"),
        requires("top_logprobs", True, "logprobs"),
    ],
}

USAGE: Schema = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        k: {"type": "integer", "minimum": 0}
        for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    },
}

FINISH = {"enum": ["stop", "length", "content_filter", "tool_calls"]}

LEGACY_LOGPROBS: Schema = {
    "type": "object",
    "required": ["tokens", "token_logprobs", "top_logprobs", "text_offset"],
    "properties": {
        "tokens": {"type": "array", "items": {"type": "string"}},
        "token_logprobs": {"type": "array", "items": nullable({"type": "number"})},
        "top_logprobs": {
            "type": "array",
            "items": nullable({"type": "object", "additionalProperties": {"type": "number"}}),
        },
        "text_offset": {"type": "array", "items": {"type": "integer"}},
    },
}

TOKEN_LOGPROB: Schema = {
    "type": "object",
    "required": ["token", "logprob", "bytes"],
    "properties": {
        "token": {"type": "string"},
        "logprob": {"type": "number"},
        "bytes": nullable({"type": "array", "items": {"type": "integer"}}),
        "top_logprobs": {"type": "array", "items": {"type": "object"}},
    },
}


def _envelope(obj: str, choice: Schema) -> Schema:
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": obj},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "system_fingerprint": {"type": "string"},
            "choices": {"type": "array", "items": choice},
            "usage": ref("Usage"),
        },
    }


COMPLETION = _envelope(
    "text_completion",
    {
        "type": "object",
        "required": ["text", "index", "logprobs", "finish_reason"],
        "properties": {
            "text": {"type": "string"},
            "index": {"type": "integer", "minimum": 0},
            "logprobs": nullable(ref("LegacyLogprobs")),
            "finish_reason": FINISH,
        },
    },
)

CHAT_COMPLETION = _envelope(
    "chat.completion",
    {
        "type": "object",
        "required": ["index", "message", "logprobs", "finish_reason"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "message": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"const": "assistant"},
                    "content": nullable({"type": "string"}),
                    "refusal": {"type": "null"},
                },
            },
            "logprobs": nullable(
                {
                    "type": "object",
                    "properties": {"content": {"type": "array", "items": TOKEN_LOGPROB}},
                }
            ),
            "finish_reason": FINISH,
        },
    },
)

ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": nullable({"type": "string"}),
                "code": nullable({"type": "string"}),
            },
        }
    },
}

MODEL: Schema = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}

BACKENDS: Schema = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["model", "backend", "state"],
                "properties": {
                    "model": {"type": "string"},
                    "backend": {"type": "string"},
                    "state": {
                        "type": "string",
                        "description": "loading, ready, unavailable, failed",
                    },
                    "error": nullable({"type": "string"}),
                    "details": {"type": "object"},
                    "stats": {"type": "object"},
                    "isolation": {"type": "string", "enum": ["none", "process"]},
                    "worker": nullable(
                        {
                            "type": "object",
                            "description": "the supervised worker process (isolation process)",
                            "properties": {
                                "pid": nullable({"type": "integer"}),
                                "state": {
                                    "type": "string",
                                    "description": "starting, ready, restarting, crashed, "
                                    "failed, closed",
                                },
                                "restarts": {"type": "integer"},
                                "last_exit": nullable(
                                    {"type": "string", "description": "SIGSEGV, exit 1, ..."}
                                ),
                                "next_attempt": nullable(
                                    {"type": "number", "description": "Unix time"}
                                ),
                            },
                        }
                    ),
                },
            },
        },
    },
}
