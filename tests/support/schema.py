"""Validate response bodies against OpenAI's official schemas: the subset of
github.com/openai/openai-openapi (MIT licence) vendored in `openai_spec/` beside this
module, so the tests need nothing outside the repository."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parent / "openai_spec" / "openapi-subset.json"


@functools.cache
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


def _nullable_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` is not JSON Schema; translate it."""
    if isinstance(node, dict):
        out = {k: _nullable_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable"):
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_nullable_to_jsonschema(x) for x in node]
    return node


def _allow_null_finish_reason(doc: dict[str, Any]) -> dict[str, Any]:
    """The spec shares CreateCompletionResponse between plain and streamed responses,
    but OpenAI's streamed chunks carry `finish_reason: null` until the last one (and
    the SDK types it as optional). Streamed chunks are checked against this variant."""
    schemas = doc["components"]["schemas"]
    for source, target in (
        ("CreateCompletionResponse", "CreateCompletionStreamChunk"),
        ("CreateChatCompletionStreamResponse", "CreateChatCompletionStreamChunk"),
    ):
        chunk = json.loads(json.dumps(schemas[source]))
        choice = chunk["properties"]["choices"]["items"]["properties"]
        choice["finish_reason"] = {"anyOf": [choice["finish_reason"], {"type": "null"}]}
        schemas[target] = chunk
    return doc


@functools.cache
def _registry() -> Registry:
    doc = _allow_null_finish_reason(_nullable_to_jsonschema(spec()))
    return Registry().with_resource("spec", Resource.from_contents(doc, DRAFT202012))


def validate(instance: Any, schema_name: str) -> None:
    """Raise jsonschema.ValidationError unless `instance` matches
    `#/components/schemas/<schema_name>` (or the streamed-chunk variant
    `CreateCompletionStreamChunk`)."""
    schema = {"$ref": f"spec#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema, registry=_registry()).validate(instance)
