"""The editors' dialects in the OpenAPI document: llama.cpp server's /completion,
/infill and /props, and Ollama's /api/* (whose errors are `{"error": "..."}`, except
those the edge answers before a handler runs, which keep the OpenAI envelope)."""

from __future__ import annotations

from typing import Any

from gateway.openapi.schemas import ERRORS, Schema, json_content, ref

_MODEL = {"type": "string", "description": "Default: the first configured model."}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}

_SAMPLING: dict[str, Schema] = {
    "n_predict": {**_INT, "description": "Tokens to generate; -1 (default): until the end."},
    "temperature": {**_NUM, "default": 0.8},
    "top_k": {**_INT, "default": 40},
    "top_p": {**_NUM, "default": 0.95},
    "min_p": {**_NUM, "default": 0.05},
    "repeat_penalty": _NUM,
    "presence_penalty": _NUM,
    "frequency_penalty": _NUM,
    "seed": _INT,
    "stop": {"type": "array", "items": _STR},
    "stream": {**_BOOL, "default": False},
    "cache_prompt": {**_BOOL, "description": "Accepted; prompts are not cached across calls."},
    "t_max_predict_ms": {
        **_INT,
        "description": "Stop once a new line is generated and this time has passed.",
    },
    "response_fields": {
        "type": "array",
        "items": _STR,
        "description": "Only these fields, keyed by their path (timings/prompt_n).",
    },
}

_NATIVE_ANSWER: Schema = {
    "type": "object",
    "properties": {
        "content": _STR,
        "stop": _BOOL,
        "tokens_predicted": _INT,
        "tokens_evaluated": _INT,
        "tokens_cached": _INT,
        "truncated": _BOOL,
        "stop_type": _STR,
        "timings": {
            "type": "object",
            "properties": {
                k: _NUM for k in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms")
            },
        },
    },
}

_COMPLETION_REQUEST: Schema = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "model": _MODEL,
        "prompt": {"anyOf": [_STR, {"type": "array", "items": _INT}]},
        **_SAMPLING,
    },
}

_INFILL_REQUEST: Schema = {
    "type": "object",
    "properties": {
        "model": _MODEL,
        "input_prefix": _STR,
        "input_suffix": _STR,
        "input_extra": {
            "type": "array",
            "items": {"type": "object", "properties": {"filename": _STR, "text": _STR}},
            "description": "Chunks of other files, placed before the FIM prefix.",
        },
        "prompt": {**_STR, "description": "Text after input_prefix (the current line)."},
        "n_indent": {
            **_INT,
            "description": "End where a line starts with less indentation than this.",
        },
        "t_max_prompt_ms": {**_INT, "description": "Accepted, not applied."},
        "samplers": {"type": "array", "items": _STR, "description": "Accepted, not applied."},
        "id_slot": {**_INT, "description": "Ignored."},
        **_SAMPLING,
    },
}


_SSE_EVENT: Schema = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "pattern": r"^\{[\s\S]*\}$", "description": "An object."},
        "event": _STR,
    },
}


def _native(summary: str, request: Schema) -> Schema:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                "200": {
                    "description": "The answer, or with stream = true `data: {content, stop, "
                    "...}` events, the last with stop = true (no [DONE]).",
                    "content": {
                        "application/json": {"schema": _NATIVE_ANSWER},
                        "text/event-stream": {"schema": _SSE_EVENT},
                    },
                },
                **ERRORS,
            },
            "security": [{"bearer": []}, {}],
        }
    }


_OLLAMA_ERROR: Schema = {
    "anyOf": [
        {"type": "object", "required": ["error"], "properties": {"error": _STR}},
        ref("ErrorResponse"),
    ]
}
_OLLAMA_ERRORS = {
    code: {**json_content(_OLLAMA_ERROR, text), "headers": {"Retry-After": {"schema": _STR}}}
    for code, text in (("4XX", "A client error."), ("5XX", "A server error."))
}

_OPTIONS: Schema = {
    "type": "object",
    "properties": {
        "num_predict": _INT,
        "temperature": _NUM,
        "top_p": _NUM,
        "top_k": _INT,
        "min_p": _NUM,
        "seed": _INT,
        "stop": {"type": "array", "items": _STR},
        "repeat_penalty": _NUM,
    },
    "description": "Sampling options are applied; runner options (num_ctx, num_thread, ...) "
    "are accepted and not applied; others are refused unless zero.",
}
_COMMON: dict[str, Schema] = {
    "model": _STR,
    "options": _OPTIONS,
    "stream": {**_BOOL, "default": True},
    "keep_alive": {"anyOf": [_STR, _NUM], "description": "Accepted."},
    "format": {"anyOf": [{"const": "json"}, {"type": "object"}]},
}
_DONE: dict[str, Schema] = {
    "model": _STR,
    "created_at": _STR,
    "done": _BOOL,
    "done_reason": _STR,
    "total_duration": _INT,
    "prompt_eval_count": _INT,
    "prompt_eval_duration": _INT,
    "eval_count": _INT,
    "eval_duration": _INT,
}
_MESSAGE: Schema = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {"role": _STR, "content": _STR, "tool_calls": {"type": "array"}},
}


def _ollama_post(summary: str, request: Schema, answer: Schema, stream: bool = False) -> Schema:
    content: dict[str, Any] = {"application/json": {"schema": answer}}
    if stream:
        content["application/x-ndjson"] = {"schema": _STR}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                "200": {
                    "description": "OK"
                    + (" (streamed: one JSON object per line)" if stream else ""),
                    "content": content,
                },
                **_OLLAMA_ERRORS,
            },
            "security": [{"bearer": []}, {}],
        }
    }


def _ollama_get(summary: str, answer: Schema) -> Schema:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": json_content(answer, "OK"), **_OLLAMA_ERRORS},
            "security": [{"bearer": []}, {}],
        }
    }


_MODELS: Schema = {
    "type": "object",
    "required": ["models"],
    "properties": {
        "models": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "model"],
                "properties": {"name": _STR, "model": _STR, "size": _INT, "digest": _STR},
            },
        }
    },
}
_NOT_MANAGED = {
    "summary": "Refused (400): the gateway does not download or manage models",
    "responses": {**_OLLAMA_ERRORS},
}

PATHS: dict[str, Schema] = {
    "/completion": _native("llama.cpp server's completion", _COMPLETION_REQUEST),
    "/infill": _native(
        "llama.cpp server's fill-in-the-middle (needs a model whose GGUF declares FIM tokens)",
        _INFILL_REQUEST,
    ),
    "/props": {
        "get": {
            "summary": "llama.cpp server's properties (context size, slots, chat template)",
            "parameters": [{"name": "model", "in": "query", "schema": _STR}],
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "required": ["default_generation_settings", "total_slots"],
                        "properties": {
                            "default_generation_settings": {"type": "object"},
                            "total_slots": _INT,
                            "chat_template": _STR,
                        },
                    },
                    "OK",
                ),
                **ERRORS,
            },
        }
    },
    "/api/generate": _ollama_post(
        "Ollama: generate (suffix for fill-in-the-middle, raw for no template; an empty "
        "prompt is answered at once, done_reason load)",
        {
            "type": "object",
            "required": ["model"],
            "properties": {
                **_COMMON,
                "prompt": _STR,
                "suffix": _STR,
                "system": _STR,
                "raw": _BOOL,
            },
        },
        {
            "type": "object",
            "required": ["model", "done"],
            "properties": {**_DONE, "response": _STR},
        },
        stream=True,
    ),
    "/api/chat": _ollama_post(
        "Ollama: chat (no messages: answered at once, done_reason load)",
        {
            "type": "object",
            "required": ["model"],
            "properties": {
                **_COMMON,
                "messages": {"type": "array", "items": _MESSAGE},
                "tools": {"type": "array", "items": {"type": "object"}},
            },
        },
        {
            "type": "object",
            "required": ["model", "done"],
            "properties": {**_DONE, "message": _MESSAGE},
        },
        stream=True,
    ),
    "/api/tags": _ollama_get("Ollama: the models clients may name", _MODELS),
    "/api/ps": _ollama_get("Ollama: the loaded models", _MODELS),
    "/api/show": _ollama_post(
        "Ollama: one model's details, template and capabilities",
        {"type": "object", "properties": {"model": _STR, "name": _STR}},
        {
            "type": "object",
            "required": ["details", "model_info", "capabilities"],
            "properties": {
                "template": _STR,
                "details": {"type": "object"},
                "model_info": {"type": "object"},
                "capabilities": {"type": "array", "items": _STR},
            },
        },
    ),
    "/api/version": _ollama_get(
        "Ollama: the API version these endpoints follow",
        {"type": "object", "required": ["version"], "properties": {"version": _STR}},
    ),
    "/api/pull": {"post": _NOT_MANAGED},
}
