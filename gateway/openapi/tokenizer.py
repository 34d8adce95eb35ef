"""`/tokenize`, `/detokenize` and `/tokenizer_info` (also under /v1/) in the OpenAPI
document: llama.cpp's server shapes and vLLM's, which the answers both carry."""

from __future__ import annotations

from gateway.openapi.schemas import ERRORS, Schema, json_content, nullable

_MODEL = {"type": "string", "description": "Default: the first configured model."}

TOKENIZE_REQUEST: Schema = {
    "type": "object",
    "properties": {
        "model": _MODEL,
        "content": {"type": "string", "description": "The text (llama.cpp's name)."},
        "prompt": {"type": "string", "description": "The text (vLLM's name); not both."},
        "add_special": {"type": "boolean", "default": False, "description": "Add BOS."},
        "add_special_tokens": {"type": "boolean", "description": "vLLM's add_special."},
        "parse_special": {"type": "boolean", "default": True},
        "with_pieces": {"type": "boolean", "default": False},
    },
    "oneOf": [{"required": ["content"]}, {"required": ["prompt"]}],
}

TOKENIZE_RESPONSE: Schema = {
    "type": "object",
    "required": ["tokens"],
    "properties": {
        "tokens": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "integer"},
                    {
                        "type": "object",
                        "required": ["id", "piece"],
                        "properties": {
                            "id": {"type": "integer"},
                            "piece": {
                                "anyOf": [
                                    {"type": "string"},
                                    {"type": "array", "items": {"type": "integer"}},
                                ],
                                "description": "Text, or the bytes when not valid UTF-8.",
                            },
                        },
                    },
                ]
            },
        },
        "count": {"type": "integer", "minimum": 0},
        "max_model_len": nullable({"type": "integer"}),
    },
}

DETOKENIZE_REQUEST: Schema = {
    "type": "object",
    "required": ["tokens"],
    "properties": {"model": _MODEL, "tokens": {"type": "array", "items": {"type": "integer"}}},
}

DETOKENIZE_RESPONSE: Schema = {
    "type": "object",
    "required": ["content"],
    "properties": {"content": {"type": "string"}, "prompt": {"type": "string"}},
}


def _post(summary: str, request: Schema, response: Schema) -> Schema:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {"200": json_content(response, "OK"), **ERRORS},
        }
    }


PATHS: dict[str, Schema] = {
    "/tokenize": _post("Text to token ids", TOKENIZE_REQUEST, TOKENIZE_RESPONSE),
    "/detokenize": _post("Token ids to text", DETOKENIZE_REQUEST, DETOKENIZE_RESPONSE),
    "/tokenizer_info": {
        "get": {
            "summary": "The tokenizer's facts (special tokens, max length)",
            "parameters": [{"name": "model", "in": "query", "schema": {"type": "string"}}],
            "responses": {
                "200": json_content(
                    {"type": "object", "required": ["model"], "properties": {"model": _MODEL}},
                    "OK",
                ),
                **ERRORS,
            },
        }
    },
}
