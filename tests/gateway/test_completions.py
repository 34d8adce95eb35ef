"""/v1/completions end to end: the real gateway process, real models, the official
`openai` SDK as the client, responses validated against OpenAI's schemas."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from tests.conftest import BLOOM_ID, SMOL_ID
from tests.support.schema import validate
from tests.support.server import GatewayProcess

TRANSLATE = "Translate to English: Je t'aime."


def test_smollm2_translates_je_t_aime(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model=SMOL_ID, prompt=TRANSLATE, temperature=0, max_tokens=24
    )
    validate(completion.model_dump(mode="json", exclude_unset=True), "CreateCompletionResponse")
    assert "love" in completion.choices[0].text.lower()
    assert completion.object == "text_completion"
    assert completion.model == SMOL_ID
    assert completion.id.startswith("cmpl-")
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 24
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 24
    assert completion.choices[0].finish_reason == "length"


def test_default_max_tokens_is_16(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model=SMOL_ID, prompt="Once upon a time", temperature=0, logit_bias={"0": -100, "2": -100}
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 16


def test_streamed_text_equals_plain_text(client: openai.OpenAI) -> None:
    kwargs = dict(
        model=SMOL_ID, prompt="The three primary colours are", temperature=0, max_tokens=32
    )
    plain = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, **kwargs))
    for chunk in chunks:
        validate(chunk.model_dump(mode="json", exclude_unset=True), "CreateCompletionStreamChunk")
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_raw_sse_framing_and_done(gateway: GatewayProcess) -> None:
    body = {"model": SMOL_ID, "prompt": "Hello", "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{gateway.base_url}/v1/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [e for e in raw.split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert "usage" not in payloads[0]  # only present when include_usage is asked for


def test_stream_usage_chunk_as_openai_sends_it(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model=SMOL_ID,
            prompt="Hello",
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *text_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 5
    assert usage_chunk.usage.total_tokens == usage_chunk.usage.prompt_tokens + 5
    for chunk in text_chunks:
        assert chunk.usage is None
        assert "usage" in chunk.model_fields_set
    validate(usage_chunk.model_dump(mode="json", exclude_unset=True), "CreateCompletionResponse")


def test_list_of_prompts_gives_one_choice_each(client: openai.OpenAI) -> None:
    prompts = ["The capital of France is", "2 + 2 ="]
    batch = client.completions.create(model=SMOL_ID, prompt=prompts, temperature=0, max_tokens=8)
    assert [c.index for c in batch.choices] == [0, 1]
    for prompt, choice in zip(prompts, batch.choices, strict=True):
        alone = client.completions.create(model=SMOL_ID, prompt=prompt, temperature=0, max_tokens=8)
        assert choice.text == alone.choices[0].text
    assert batch.usage is not None and batch.usage.completion_tokens == 16


def test_stop_string_ends_generation_and_is_not_returned(client: openai.OpenAI) -> None:
    free = client.completions.create(
        model=SMOL_ID, prompt="1, 2, 3, 4,", temperature=0, max_tokens=20
    )
    assert " 7," in free.choices[0].text
    stopped = client.completions.create(
        model=SMOL_ID, prompt="1, 2, 3, 4,", temperature=0, max_tokens=20, stop=[" 7"]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == free.choices[0].text.split(" 7")[0]
    streamed = client.completions.create(
        model=SMOL_ID, prompt="1, 2, 3, 4,", temperature=0, max_tokens=20, stop=" 7", stream=True
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == stopped.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    kwargs = dict(
        model=SMOL_ID, prompt="My favourite animal is", temperature=1.0, top_p=0.95, max_tokens=16
    )
    a = client.completions.create(seed=1234, **kwargs).choices[0].text
    b = client.completions.create(seed=1234, **kwargs).choices[0].text
    assert a == b
    others = {client.completions.create(seed=s, **kwargs).choices[0].text for s in (1, 2, 3)}
    assert len(others | {a}) > 1  # different seeds explore different texts


def test_user_field_is_accepted(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model=SMOL_ID, prompt="Hi", max_tokens=2, user="user-1234"
    )
    assert completion.usage is not None


def test_tiny_bloom_model_loads_and_streams(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model=BLOOM_ID, prompt="the cat", max_tokens=12, temperature=0, stream=True
        )
    )
    assert sum(1 for c in chunks if c.choices[0].text) >= 1
    assert chunks[-1].choices[0].finish_reason == "length"
    plain = client.completions.create(
        model=BLOOM_ID, prompt="the cat", max_tokens=12, temperature=0
    )
    assert plain.choices[0].text == "".join(c.choices[0].text for c in chunks)
    assert plain.usage is not None and plain.usage.completion_tokens == 12


def test_async_client_streams_concurrently(async_client: openai.AsyncOpenAI) -> None:
    asyncio.run(_stream_concurrently(async_client))


async def _stream_concurrently(async_client: openai.AsyncOpenAI) -> None:
    prompts = ["Paris is", "The sun is", "Water is", "Cats are"]

    async def run(prompt: str) -> tuple[str, str]:
        stream = await async_client.completions.create(
            model=SMOL_ID, prompt=prompt, max_tokens=12, temperature=0, stream=True
        )
        text = "".join([c.choices[0].text async for c in stream])
        plain = await async_client.completions.create(
            model=SMOL_ID, prompt=prompt, max_tokens=12, temperature=0
        )
        return text, plain.choices[0].text

    results = await asyncio.gather(*(run(p) for p in prompts))
    for streamed, plain in results:
        assert streamed == plain
        assert streamed  # nothing was truncated or swallowed


def test_models_endpoints(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    listing = httpx.get(f"{gateway.base_url}/v1/models").json()
    validate(listing, "ListModelsResponse")
    assert {m.id for m in client.models.list()} == {SMOL_ID, BLOOM_ID}
    model = client.models.retrieve(SMOL_ID)
    validate(model.model_dump(mode="json"), "Model")
    assert model.id == SMOL_ID
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_health_and_ready(gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.base_url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.base_url}/ready")
    assert ready.status_code == 200
    assert ready.json()["models"] == {SMOL_ID: "ready", BLOOM_ID: "ready"}
