"""Structured output and tool calls on the real SmolLM2 engine: grammar-constrained
answers parse and validate, other sequences of the same batch are unchanged, forced
tool choices produce valid calls, and the tool history renders through the template."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from backends.base import (
    ChatMessage,
    Finished,
    GenerationRequest,
    OutputConstraint,
    SamplingParams,
    TextDelta,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from backends.errors import InvalidRequest
from backends.llama_cpp import LlamaCppBackend, structured
from backends.llama_cpp.grammar import GrammarCache
from tests.support.schemas import PROMPTS, SCHEMAS, TOOL_PARAMETERS, TOOLS


def backend_for(path: Path, **options: object) -> LlamaCppBackend:
    options = {"model_path": str(path), "n_ctx": 1024, "threads": 1, **options}
    return LlamaCppBackend.from_config("m", options, Path("."))


async def run(backend: LlamaCppBackend, request: GenerationRequest) -> tuple[str, Finished]:
    texts = []
    async for event in backend.generate(request):
        if isinstance(event, TextDelta):
            texts.append(event.text)
        else:
            return "".join(texts), event
    raise AssertionError("no Finished event")


def chat(text: str, **fields: Any) -> GenerationRequest:
    params = fields.pop("params", SamplingParams(max_tokens=96, temperature=0))
    return GenerationRequest(messages=(ChatMessage("user", text),), params=params, **fields)


def constrained(name: str, prompt: str, temperature: float, seed: int = 0) -> GenerationRequest:
    params = SamplingParams(max_tokens=96, temperature=temperature, seed=seed)
    return chat(prompt, params=params, constraint=OutputConstraint("json_schema", SCHEMAS[name]))


def assert_valid(name: str, text: str, finished: Finished) -> None:
    assert finished.finish_reason == "stop", (name, text)
    jsonschema.validate(json.loads(text), SCHEMAS[name])


def grid(path: Path, prompts: list[str]) -> None:
    cases = list(itertools.product(SCHEMAS, prompts, (0.0, 1.0)))

    async def main() -> None:
        async with backend_for(path, parallel=4) as backend:
            room = asyncio.Semaphore(16)  # within the engine's queue

            async def one(i: int, name: str, prompt: str, temperature: float) -> Any:
                async with room:
                    return await run(backend, constrained(name, prompt, temperature, seed=i))

            results = await asyncio.gather(*(one(i, *case) for i, case in enumerate(cases)))
        for (name, _, _), (text, finished) in zip(cases, results, strict=True):
            assert_valid(name, text, finished)

    asyncio.run(main())


def test_each_schema_parses_and_validates_at_temperature_0_and_1(smollm2_path: Path) -> None:
    grid(smollm2_path, PROMPTS[:1])


@pytest.mark.slow
def test_twenty_prompts_by_five_schemas_all_parse_and_validate(smollm2_path: Path) -> None:
    grid(smollm2_path, PROMPTS)


def test_unconstrained_sequences_are_bit_identical_beside_constrained_ones(
    smollm2_path: Path,
) -> None:
    plain = [chat(p, params=SamplingParams(max_tokens=24, temperature=0)) for p in PROMPTS[:2]]

    async def main() -> None:
        async with backend_for(smollm2_path, parallel=4) as backend:
            solo = [await run(backend, r) for r in plain]
            mixed = await asyncio.gather(
                *(run(backend, r) for r in plain),
                run(backend, constrained("person", PROMPTS[0], 0.0)),
                run(backend, constrained("tags", PROMPTS[2], 1.0)),
            )
            steps = backend.stats()
        assert [t for t, _ in mixed[:2]] == [t for t, _ in solo]
        assert [f.usage for _, f in mixed[:2]] == [f.usage for _, f in solo]
        assert_valid("person", *mixed[2])
        assert_valid("tags", *mixed[3])
        assert steps["steps"] > 0

    asyncio.run(main())


def specs() -> tuple[ToolSpec, ...]:
    return tuple(
        ToolSpec(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
        for t in TOOLS
    )


def test_required_and_named_tool_choice_give_valid_calls(smollm2_path: Path) -> None:
    asks = [
        ("required", None, "What is the weather in Oslo?"),
        ("function", "get_weather", "Is it raining in Rome?"),
        ("function", "add", "What is 3 plus 4?"),
        ("function", "create_event", "Plan a picnic on 2025-06-01."),
    ]

    async def main() -> None:
        async with backend_for(smollm2_path, parallel=4) as backend:
            return await asyncio.gather(
                *(
                    run(backend, chat(text, tools=specs(), tool_choice=ToolChoice(mode, name)))
                    for mode, name, text in asks
                )
            )

    for (mode, name, _), (text, finished) in zip(asks, asyncio.run(main()), strict=True):
        assert text == ""  # the call is not content
        assert finished.finish_reason == "tool_calls"
        (call,) = finished.tool_calls
        assert call.id.startswith("call_")
        assert call.name == name if mode == "function" else call.name in TOOL_PARAMETERS
        jsonschema.validate(json.loads(call.arguments), TOOL_PARAMETERS[call.name])


def test_logit_bias_banning_the_end_token_cannot_break_a_grammar(smollm2_path: Path) -> None:
    # Once the object is complete the grammar allows only end-of-generation tokens;
    # banning them must not make llama.cpp pick a token the grammar forbids.
    async def main() -> tuple[str, Finished]:
        async with backend_for(smollm2_path, parallel=1) as backend:
            eos = backend._model.eos if backend._model is not None else 0
            params = SamplingParams(max_tokens=96, temperature=0, logit_bias={eos: -100})
            constraint = OutputConstraint("json_schema", SCHEMAS["status"])
            return await run(backend, chat(PROMPTS[1], params=params, constraint=constraint))

    text, finished = asyncio.run(main())
    jsonschema.validate(json.loads(text), SCHEMAS["status"])
    assert finished.finish_reason == "stop"


def test_tool_history_renders_through_the_template(smollm2_path: Path) -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo", "unit": "celsius"}')
    history = (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Weather in Oslo?"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", "12 degrees and sunny", tool_call_id="call_1"),
    )

    async def main() -> tuple[str, Finished, str]:
        async with backend_for(smollm2_path, parallel=1) as backend:
            assert backend._model is not None and backend._template is not None
            request = GenerationRequest(
                messages=history,
                params=SamplingParams(max_tokens=8, temperature=0),
                tools=specs(),
            )
            plan = structured.plan(request, GrammarCache(), backend._model.vocab)
            rendered = backend._template.render(plan.request.messages)
            text, finished = await run(backend, request)
            return text, finished, rendered

    _, finished, rendered = asyncio.run(main())
    assert '{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}' in rendered
    assert "<|im_start|>tool\n12 degrees and sunny<|im_end|>" in rendered
    assert "Be brief." in rendered and '"create_event"' in rendered  # one system message
    assert rendered.count("<|im_start|>system") == 1
    assert finished.usage.completion_tokens > 0


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "string", "pattern": "^a+$"}, "pattern"),
        ({"type": "object", "patternProperties": {"a": {}}}, "patternProperties"),
        ({"type": "integer", "minimum": 3}, "minimum"),
        ({"not": {"type": "string"}}, "not"),
        ({"type": "string", "format": "email"}, "email"),
        ({"$ref": "https://example.com/schema.json"}, "$ref"),
        ({"type": "tuple"}, "tuple"),
    ],
)
def test_a_schema_outside_the_subset_is_refused_naming_the_keyword(
    schema: dict[str, Any], keyword: str
) -> None:
    request = chat("x", constraint=OutputConstraint("json_schema", schema))
    with pytest.raises(InvalidRequest) as info:
        structured.plan(request, GrammarCache(), None)
    assert info.value.param == "response_format.json_schema.schema"
    assert keyword in str(info.value)


def test_a_tool_outside_the_subset_is_refused_naming_the_tool() -> None:
    tools = (*specs(), ToolSpec("bad", None, {"type": "object", "minProperties": 1}))
    with pytest.raises(InvalidRequest) as info:
        structured.plan(chat("x", tools=tools), GrammarCache(), None)
    assert info.value.param == "tools[3].function.parameters"
    assert "minProperties" in str(info.value)


def test_auto_answers_either_a_valid_call_or_plain_text(smollm2_path: Path) -> None:
    asks = ["What is the weather in Oslo in celsius? Call the function.", "Say hello."]

    async def main() -> list[tuple[str, Finished]]:
        async with backend_for(smollm2_path, parallel=2) as backend:
            return await asyncio.gather(*(run(backend, chat(a, tools=specs())) for a in asks))

    for text, finished in asyncio.run(main()):
        if finished.tool_calls:
            (call,) = finished.tool_calls
            assert finished.finish_reason == "tool_calls" and text == ""
            jsonschema.validate(json.loads(call.arguments), TOOL_PARAMETERS[call.name])
        else:
            assert finished.finish_reason in ("stop", "length")
            assert text.strip() and not text.lstrip().startswith("{")
