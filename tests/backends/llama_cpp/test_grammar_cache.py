"""Compiled grammars are cached per schema (least recently used dropped), the JSON
strings they allow are strict JSON, and `json_object` is any JSON object."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from backends.base import (
    ChatMessage,
    GenerationRequest,
    OutputConstraint,
    SamplingParams,
    TextDelta,
)
from backends.llama_cpp import LlamaCppBackend
from backends.llama_cpp.grammar import ANY_OBJECT, GrammarCache, schema_to_gbnf
from backends.llama_cpp.native import Model


def test_grammars_are_cached_per_schema_least_recently_used_dropped(smollm2_path: Path) -> None:
    model = Model(smollm2_path, 0)
    try:
        cache = GrammarCache(size=2)
        a, b, c = ({"type": "object", "properties": {k: {"type": "integer"}}} for k in "abc")
        first = cache.grammar(a, "p", model.vocab)
        cache.grammar(b, "p", model.vocab)
        assert (
            cache.grammar(dict(reversed(list(a.items()))), "p", model.vocab) == first
        )  # same schema
        assert (cache.hits, cache.misses) == (1, 2)
        cache.grammar(c, "p", model.vocab)  # b was least recently used: dropped
        cache.grammar(a, "p", model.vocab)
        assert (cache.hits, cache.misses) == (2, 3)
        cache.grammar(b, "p", model.vocab)
        assert (cache.hits, cache.misses) == (2, 4)
    finally:
        model.close()


def test_json_strings_may_not_hold_raw_control_characters() -> None:
    gbnf = schema_to_gbnf({"type": "object", "properties": {"s": {"type": "string"}}})
    char_rule = next(line for line in gbnf.splitlines() if line.startswith("char ::="))
    assert "\\x00-\\x1F" in char_rule


def test_json_object_is_any_json_object(smollm2_path: Path) -> None:
    async def main() -> str:
        options = {"model_path": str(smollm2_path), "n_ctx": 512, "threads": 1, "parallel": 1}
        async with LlamaCppBackend.from_config("m", options, Path(".")) as backend:
            request = GenerationRequest(
                messages=(ChatMessage("user", "Give me a JSON object with a key 'name'."),),
                params=SamplingParams(max_tokens=128, temperature=0),
                constraint=OutputConstraint("json_object"),
            )
            texts = [e.text async for e in backend.generate(request) if isinstance(e, TextDelta)]
            return "".join(texts)

    assert ANY_OBJECT == {"type": "object"}
    assert isinstance(json.loads(asyncio.run(main())), dict)
