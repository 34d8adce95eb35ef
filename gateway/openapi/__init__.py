"""The gateway's own API as an OpenAPI 3.1 document, served at `GET /openapi.json`.

Static data, written by hand next to the wire layer it describes: the fields each
endpoint honours with their ranges, the response shapes, streaming as
`text/event-stream`, the extensions (top_k, min_p, repeat_penalty, /v1/backends,
/health, /ready, /tokenize, /detokenize) and the error envelope of every 4xx/5xx.
`document(paths)` returns a fresh copy holding only the paths the app serves."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from gateway import __version__
from gateway.openapi import editors, experiments, feedback, tokenizer
from gateway.openapi.schemas import (
    BACKENDS,
    CHAT_COMPLETION,
    CHAT_REQUEST,
    COMPLETION,
    COMPLETION_REQUEST,
    ERROR,
    ERRORS,
    LEGACY_LOGPROBS,
    MODEL,
    USAGE,
    Schema,
    json_content,
    ref,
)

SSE_EVENT: Schema = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "pattern": r"^(\[DONE\]|\{[\s\S]*\})$",
            "description": "A chunk (or an error envelope) as JSON, and last `[DONE]`.",
        },
        "event": {"type": "string"},
    },
}


# On responses of a route (README "A/B testing"), streams included.
ROUTE_HEADERS: Schema = {
    name: {"description": what, "required": False, "schema": {"type": "string"}}
    for name, what in (
        ("x-gateway-route", "the route the request named"),
        ("x-gateway-experiment", "the route's experiment"),
        ("x-gateway-variant", "the variant assigned (or forced by the request's header)"),
        ("x-gateway-model", "the model that served it, after any fallback"),
    )
}


def _generation(summary: str, request: str, response: str, chunk_note: str) -> Schema:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref(request)}},
            },
            "responses": {
                "200": {
                    "description": "The response, or with stream = true an SSE stream of "
                    f"`data: <{chunk_note}>` events ending with `data: [DONE]`.",
                    "headers": ROUTE_HEADERS,
                    "content": {
                        "application/json": {"schema": ref(response)},
                        "text/event-stream": {"schema": SSE_EVENT},
                    },
                },
                **ERRORS,
            },
        }
    }


def _get(summary: str, schema: Schema, extra: dict[str, Any] | None = None) -> Schema:
    op: Schema = {"summary": summary, "responses": {"200": json_content(schema, "OK"), **ERRORS}}
    op.update(extra or {})
    return {"get": op}


_READY = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["ready", "not_ready"]},
        "model": {"type": "string"},
        "models": {"type": "object", "additionalProperties": {"type": "string"}},
        "replicas": {"type": "object"},
    },
}

_MODEL_ID = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _keyed(path_item: Schema) -> Schema:
    """Operations that need `Authorization: Bearer <key>` when server.api_keys is set."""
    return {method: {**op, "security": [{"bearer": []}, {}]} for method, op in path_item.items()}


_DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "inference-gateway",
        "version": __version__,
        "description": "An OpenAI-compatible inference gateway. Errors are always "
        '`{"error": {"message", "type", "param", "code"}}`.',
    },
    "paths": {
        "/v1/completions": _keyed(
            _generation(
                "Legacy completions", "CreateCompletionRequest", "Completion", "Completion chunk"
            )
        ),
        "/v1/chat/completions": _keyed(
            _generation(
                "Chat completions", "CreateChatCompletionRequest", "ChatCompletion", "chunk"
            )
        ),
        "/v1/models": _keyed(
            _get(
                "The configured models",
                {
                    "type": "object",
                    "required": ["object", "data"],
                    "properties": {
                        "object": {"const": "list"},
                        "data": {"type": "array", "items": ref("Model")},
                    },
                },
            )
        ),
        "/v1/models/{model_id}": _keyed(
            _get(
                "One model (404 model_not_found if unknown)",
                ref("Model"),
                {"parameters": [_MODEL_ID]},
            )
        ),
        "/v1/backends": _keyed(_get("Each model's backend, state and live stats", BACKENDS)),
        "/health": _get("200 while the process is alive", {"type": "object"}),
        "/ready": _get(
            "200 once every model can serve, 503 before; with ?model=ID, for one model or "
            "route (a route is ready when one of its models is)",
            _READY,
            {"parameters": [{**_MODEL_ID, "in": "query", "name": "model", "required": False}]},
        ),
        "/metrics": _keyed(
            {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **ERRORS,
                    },
                }
            }
        ),
        **{
            prefix + path: _keyed(item)
            for prefix in ("", "/v1")
            for path, item in tokenizer.PATHS.items()
        },
        **feedback.PATHS,
        **experiments.PATHS,
        **editors.PATHS,
        "/openapi.json": _get("This document", {"type": "object"}),
    },
    "components": {
        "schemas": {
            "CreateCompletionRequest": COMPLETION_REQUEST,
            "CreateChatCompletionRequest": CHAT_REQUEST,
            "Completion": COMPLETION,
            "ChatCompletion": CHAT_COMPLETION,
            "LegacyLogprobs": LEGACY_LOGPROBS,
            "Usage": USAGE,
            "Model": MODEL,
            "ErrorResponse": ERROR,
        },
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "server.api_keys"}
        },
    },
}


def document(served_paths: Iterable[str] | None = None) -> Schema:
    """A copy of the document; with `served_paths`, only those paths are described."""
    doc = copy.deepcopy(_DOCUMENT)
    if served_paths is not None:
        keep = set(served_paths)
        doc["paths"] = {p: op for p, op in doc["paths"].items() if p in keep}
    return doc


def described_paths() -> list[str]:
    return list(_DOCUMENT["paths"])
