"""Validate response bodies against OpenAI's official schemas
(`shared/openai-spec/openapi-subset.json`, beside the repository)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[2]
SPEC_CANDIDATES = [
    ROOT.parent / "shared" / "openai-spec" / "openapi-subset.json",  # shared/ beside the clone
    ROOT / "shared" / "openai-spec" / "openapi-subset.json",
]


@functools.cache
def spec() -> dict[str, Any]:
    override = os.environ.get("OPENAI_SPEC_PATH")
    for path in [Path(override)] if override else SPEC_CANDIDATES:
        if path.exists():
            return json.loads(path.read_text())
    raise FileNotFoundError("openapi-subset.json not found beside the repository")


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
