"""Structured output for llama.cpp: a JSON Schema, checked against the subset this
gateway enforces, becomes a GBNF grammar that llama.cpp's grammar sampler applies
token by token in the sequence's own sampler chain.

The subset (anything else is refused with a 400 naming the keyword):
- `type` (object, array, string, number, integer, boolean, null, or a list of these),
  `enum`, `const`;
- objects: `properties`, `required` (the others are optional), `additionalProperties`
  (false, true or a schema);
- arrays: `items`, `minItems`, `maxItems`;
- strings: `minLength`, `maxLength`, `format` date, time, date-time;
- `anyOf`, `oneOf` (treated as anyOf), `allOf` of one schema;
- `$ref` to `#/$defs/...` or `#/definitions/...` within the schema;
- annotations that do not constrain: title, description, examples, default, $schema,
  $id, $comment, strict.

The conversion is llama-cpp-python's own (`llama_cpp.llama_grammar`), checked for
this subset by the tests; one change: JSON strings may not hold raw control
characters (strict JSON parsers refuse them).
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Mapping
from typing import Any

import llama_cpp
from llama_cpp import llama_grammar

from backends.base import OutputConstraint
from backends.errors import InvalidRequest

TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
FORMATS = {"date", "time", "date-time"}
ANNOTATIONS = {"title", "description", "examples", "default", "$schema", "$id", "$comment"}
KEYWORDS = {
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "format",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "$defs",
    "definitions",
    "strict",
} | ANNOTATIONS
MAX_DEPTH = 32

# Any JSON object, for `json_object`.
ANY_OBJECT: Mapping[str, Any] = {"type": "object"}

# llama-cpp-python's JSON string character allows raw control characters.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x00-\\x1F] |'


def check_schema(schema: Any, param: str) -> None:
    """Refuse (400, naming `param` and the keyword) a schema outside the subset."""
    if not isinstance(schema, dict):
        raise InvalidRequest(f"Invalid '{param}': a JSON Schema must be an object.", param)
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        value = schema.get(key, {})
        if not isinstance(value, dict):
            raise InvalidRequest(f"Invalid '{param}': '{key}' must be an object.", param)
        defs.update({f"#/{key}/{name}": sub for name, sub in value.items()})
    _check(schema, param, defs, 0, "")


def _refuse(param: str, where: str, what: str) -> InvalidRequest:
    at = f" at '{where}'" if where else ""
    return InvalidRequest(f"Invalid '{param}'{at}: {what}", param, "unsupported_schema")


def _check(node: Any, param: str, defs: dict[str, Any], depth: int, where: str) -> None:
    if node is True or node == {}:
        return
    if not isinstance(node, dict):
        raise _refuse(param, where, "a schema must be an object.")
    if depth > MAX_DEPTH:
        raise _refuse(param, where, f"the schema nests deeper than {MAX_DEPTH} levels.")
    for key in node:
        if key not in KEYWORDS:
            raise _refuse(
                param,
                where,
                f"the JSON Schema keyword '{key}' is not supported for structured output "
                "(see the README for the supported subset).",
            )
    kinds = node.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
        if kind not in TYPES:
            raise _refuse(param, where, f"unknown type {json.dumps(kind)[:40]}.")
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        raise _refuse(param, where, "'enum' must be a non-empty array.")
    if "format" in node and node["format"] not in FORMATS:
        raise _refuse(
            param,
            where,
            f"the string format {json.dumps(node['format'])[:40]} is not supported "
            f"(supported: {', '.join(sorted(FORMATS))}).",
        )
    for key in ("minItems", "maxItems", "minLength", "maxLength"):
        value = node.get(key)
        if value is not None and (type(value) is not int or value < 0 or value > 10_000):
            raise _refuse(param, where, f"'{key}' must be an integer from 0 to 10000.")
    ref = node.get("$ref")
    if ref is not None and (not isinstance(ref, str) or ref not in defs):
        raise _refuse(
            param,
            where,
            "'$ref' must name an entry of '$defs' or 'definitions' within the schema.",
        )
    props = node.get("properties", {})
    if not isinstance(props, dict):
        raise _refuse(param, where, "'properties' must be an object.")
    required = node.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _refuse(param, where, "'required' must be an array of names.")
    for name, sub in props.items():
        _check(sub, param, defs, depth + 1, f"{where}/properties/{name}")
    extra = node.get("additionalProperties")
    if extra is not None and not isinstance(extra, bool):
        _check(extra, param, defs, depth + 1, f"{where}/additionalProperties")
    if "items" in node:
        _check(node["items"], param, defs, depth + 1, f"{where}/items")
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            options = node[key]
            if not isinstance(options, list) or not options:
                raise _refuse(param, where, f"'{key}' must be a non-empty array.")
            if key == "allOf" and len(options) != 1:
                raise _refuse(param, where, "'allOf' is supported with one schema only.")
            for k, sub in enumerate(options):
                _check(sub, param, defs, depth + 1, f"{where}/{key}/{k}")
    for key in ("$defs", "definitions"):
        for name, sub in node.get(key, {}).items() if depth == 0 else ():
            _check(sub, param, defs, depth + 1, f"/{key}/{name}")


def schema_to_gbnf(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar of `schema` (already checked)."""
    node = dict(schema)
    if "oneOf" in node and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")
    text = json.dumps(_one_of_as_any_of(node))
    gbnf = llama_grammar.json_schema_to_gbnf(text)
    return gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR)


def _one_of_as_any_of(node: Any) -> Any:
    if isinstance(node, list):
        return [_one_of_as_any_of(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _one_of_as_any_of(v) for k, v in node.items() if k != "strict"}
    if "oneOf" in out and "anyOf" not in out:
        out["anyOf"] = out.pop("oneOf")
    kinds = out.get("type")
    if isinstance(kinds, list) and "anyOf" not in out:
        # The converter drops a type list's other keywords (maxLength, items, ...):
        # one branch per type keeps them.
        rest = {k: v for k, v in out.items() if k != "type"}
        return {"anyOf": [{**rest, "type": kind} for kind in kinds]}
    if "allOf" in out and len(out["allOf"]) == 1 and len(out) == 1:
        return out["allOf"][0]
    return out


def grammar_compiles(vocab: Any, gbnf: str) -> bool:
    """Whether llama.cpp accepts the grammar (it logs and returns NULL if not)."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


class GrammarCache:
    """Compiled grammars per schema, least recently used dropped past `size`.
    Thread-safe: prompts are built in worker threads."""

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def grammar(self, schema: Mapping[str, Any], param: str, vocab: Any) -> str:
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return cached
        check_schema(schema, param)
        try:
            gbnf = schema_to_gbnf(schema)
        except Exception as exc:  # the converter's own refusals (ValueError, KeyError)
            why = f"the schema cannot be turned into a grammar: {exc}"[:300]
            raise _refuse(param, "", why) from None
        if not grammar_compiles(vocab, gbnf):
            raise _refuse(param, "", "the schema's grammar was refused by llama.cpp.")
        with self._lock:
            self.misses += 1
            self._items[key] = gbnf
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return gbnf


def constraint_schema(constraint: OutputConstraint) -> tuple[Mapping[str, Any], str]:
    """The schema a constraint enforces, and the request field that gave it."""
    if constraint.kind == "json_object":
        return ANY_OBJECT, "response_format"
    if constraint.schema is None:
        raise InvalidRequest(
            "Missing 'response_format.json_schema.schema'.", "response_format.json_schema"
        )
    return constraint.schema, "response_format.json_schema.schema"
