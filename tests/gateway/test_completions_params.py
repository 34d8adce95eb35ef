"""Every /v1/completions parameter, through the official SDK against the real server,
responses validated against OpenAI's schemas."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import httpx
import llama_cpp
import openai
import pytest

from backends.base import TokenLogprob, Usage
from gateway.generation import ChoiceOutcome
from gateway.openai.completions import parse_completion_request
from tests.conftest import BLOOM_ID, SMOL_ID
from tests.support.schema import validate
from tests.support.server import GatewayProcess

COUNT = "1, 2, 3, 4,"


def greedy(client: openai.OpenAI, prompt: object = COUNT, **kw: object) -> openai.types.Completion:
    kw.setdefault("max_tokens", 12)
    return client.completions.create(model=SMOL_ID, prompt=prompt, temperature=0, **kw)


def check_schema(completion: openai.types.Completion) -> None:
    validate(completion.model_dump(mode="json", exclude_unset=True), "CreateCompletionResponse")


@pytest.fixture(scope="module")
def tokenize(smollm2_path: Path) -> Callable[[str], list[int]]:
    """SmolLM2's own tokenizer (vocabulary only), to build token-id prompts and biases."""
    vocab = llama_cpp.Llama(str(smollm2_path), vocab_only=True, verbose=False)
    return lambda text: vocab.tokenize(text.encode(), add_bos=False, special=False)


def test_prompt_as_token_ids(client: openai.OpenAI, tokenize: Callable[[str], list[int]]) -> None:
    one = greedy(client, tokenize("Hello world"))
    assert one.choices[0].text == greedy(client, "Hello world").choices[0].text
    both = greedy(client, [tokenize("Hello world"), tokenize("The sky is")])
    assert [c.index for c in both.choices] == [0, 1]
    assert both.choices[1].text == greedy(client, "The sky is").choices[0].text
    assert both.usage is not None
    assert both.usage.prompt_tokens == len(tokenize("Hello world")) + len(tokenize("The sky is"))
    check_schema(both)
    echoed = greedy(client, tokenize("Hello world"), echo=True, max_tokens=0)
    assert echoed.choices[0].text == "Hello world"


def test_n_returns_n_choices_per_prompt(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model=SMOL_ID, prompt=["A", "B"], n=3, max_tokens=4, temperature=1.0, seed=7
    )
    assert [c.index for c in out.choices] == [0, 1, 2, 3, 4, 5]
    assert out.usage is not None and out.usage.completion_tokens == 24
    check_schema(out)


def test_best_of_generates_all_candidates_and_returns_n(client: openai.OpenAI) -> None:
    kw = dict(
        model=SMOL_ID,
        prompt=["My favourite food is", "I live in"],
        max_tokens=8,
        temperature=1.0,
        seed=99,
    )
    best = client.completions.create(best_of=4, n=2, logprobs=0, **kw)
    check_schema(best)
    assert [c.index for c in best.choices] == [0, 1, 2, 3]
    assert best.usage is not None and best.usage.completion_tokens == 2 * 4 * 8
    for prompt_index in (0, 1):  # the kept candidates come best first
        pair = best.choices[2 * prompt_index : 2 * prompt_index + 2]
        means = [sum(c.logprobs.token_logprobs) / 8 for c in pair]  # type: ignore[union-attr]
        assert means[0] >= means[1]
    # The same candidates, seeds 99..102, each returned with its log-probs: best_of must
    # have kept the two with the highest mean (sequences don't affect one another).
    alone = client.completions.create(n=4, logprobs=0, **{**kw, "prompt": kw["prompt"][0]})
    mean = {c.text: sum(c.logprobs.token_logprobs) / 8 for c in alone.choices}  # type: ignore[union-attr]
    assert [c.text for c in best.choices[:2]] == sorted(mean, key=mean.__getitem__)[::-1][:2]
    plain = client.completions.create(best_of=3, n=1, **kw)
    assert all(c.logprobs is None for c in plain.choices)  # not asked for, not returned
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(best_of=3, n=1, stream=True, **kw)
    assert err.value.body["param"] == "best_of"  # type: ignore[index]


def test_best_of_selection_rule() -> None:
    """Which candidates best_of keeps: per prompt, the n with the highest mean
    log-probability, renumbered prompt-major as OpenAI numbers choices."""
    call = parse_completion_request({"model": "m", "prompt": ["a", "b"], "n": 1, "best_of": 3})

    def outcome(index: int, *values: float) -> ChoiceOutcome:
        entries = [TokenLogprob("x", v) for v in values]
        return ChoiceOutcome(index, f"c{index}", "length", Usage(1, len(values)), entries)

    kept = call.select(
        [
            outcome(0, -1, -1),
            outcome(1, -0.1, -0.3),
            outcome(2, -5),
            outcome(3, -2),
            outcome(4, -3),
            outcome(5, -0.5, -4),
        ]
    )
    assert [(o.index, o.text) for o in kept] == [(0, "c1"), (1, "c3")]


@pytest.mark.parametrize("k", [0, 1, 5])
def test_logprobs_legacy_shape(client: openai.OpenAI, k: int) -> None:
    out = greedy(client, logprobs=k, max_tokens=10)
    check_schema(out)
    choice = out.choices[0]
    lp = choice.logprobs
    assert lp is not None
    n = len(lp.tokens)
    assert n == 10 == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert "".join(lp.tokens) == choice.text
    for token, offset, value, top in zip(
        lp.tokens, lp.text_offset, lp.token_logprobs, lp.top_logprobs, strict=True
    ):
        assert choice.text[offset : offset + len(token)] == token
        assert value <= 0
        assert len(top) == k
        if k:  # greedy: the chosen token is the most likely one
            assert math.isclose(max(top.values()), value, abs_tol=1e-4)


def test_echo_with_logprobs_and_no_new_tokens(client: openai.OpenAI) -> None:
    """What evaluation harnesses do to score a text: echo, logprobs, max_tokens 0."""
    out = client.completions.create(
        model=SMOL_ID, prompt="The capital of France is Paris", max_tokens=0, echo=True, logprobs=1
    )
    choice = out.choices[0]
    assert choice.text == "The capital of France is Paris"
    lp = choice.logprobs
    assert lp is not None and "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert out.usage is not None and out.usage.completion_tokens == 0
    # a likely continuation scores higher than an unlikely one
    worse = client.completions.create(
        model=SMOL_ID, prompt="The capital of France is Banana", max_tokens=0, echo=True, logprobs=0
    )
    assert lp.token_logprobs[-1] > worse.choices[0].logprobs.token_logprobs[-1]


def test_echo_prepends_prompt_with_generation(client: openai.OpenAI) -> None:
    plain = greedy(client)
    echoed = greedy(client, echo=True, logprobs=0)
    assert echoed.choices[0].text == COUNT + plain.choices[0].text
    lp = echoed.choices[0].logprobs
    assert lp is not None and "".join(lp.tokens) == echoed.choices[0].text
    streamed = list(
        client.completions.create(
            model=SMOL_ID, prompt=COUNT, temperature=0, max_tokens=12, echo=True, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed) == echoed.choices[0].text


def test_stop_split_across_tokens_and_multiple_stops(client: openai.OpenAI) -> None:
    free = greedy(client, max_tokens=24).choices[0].text
    assert " 7, 8," in free
    for stop in ([" 7, 8"], ["nope", ", 8,"], "7, 8, 9"):
        out = greedy(client, max_tokens=24, stop=stop)
        first = min(free.find(s) for s in ([stop] if isinstance(stop, str) else stop) if s in free)
        assert out.choices[0].text == free[:first]
        assert out.choices[0].finish_reason == "stop"
        chunks = list(
            client.completions.create(
                model=SMOL_ID, prompt=COUNT, temperature=0, max_tokens=24, stop=stop, stream=True
            )
        )
        assert "".join(c.choices[0].text for c in chunks) == free[:first]


def test_logit_bias_bans_and_forces_tokens(
    client: openai.OpenAI, tokenize: Callable[[str], list[int]]
) -> None:
    base = greedy(client, logprobs=0, max_tokens=3)
    first = base.choices[0].logprobs.tokens[0]  # type: ignore[union-attr]
    (first_id,) = tokenize(first)
    banned = greedy(client, logprobs=0, max_tokens=3, logit_bias={str(first_id): -100})
    assert banned.choices[0].logprobs.tokens[0] != first  # type: ignore[union-attr]
    (nine,) = tokenize("9")
    forced = greedy(client, max_tokens=4, logit_bias={str(nine): 100})
    assert forced.choices[0].text == "9999"


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty", "repeat_penalty"])
def test_penalties_change_repetitive_output(client: openai.OpenAI, penalty: str) -> None:
    prompt = "Repeat the word dog: dog dog dog dog"  # greedy: " dog" sixteen times
    base = greedy(client, prompt, max_tokens=16).choices[0].text
    value = 1.5 if penalty == "repeat_penalty" else 2.0
    penalised = greedy(client, prompt, max_tokens=16, extra_body={penalty: value})
    assert penalised.choices[0].text != base
    assert base.count("dog") == 16
    assert penalised.choices[0].text.count("dog") < 8


def test_temperature_zero_and_narrow_sampling_are_greedy(client: openai.OpenAI) -> None:
    reference = greedy(client, "The ocean is", max_tokens=10).choices[0].text
    for extra in ({"top_p": 1e-6}, {"extra_body": {"top_k": 1}}, {"extra_body": {"min_p": 1.0}}):
        out = client.completions.create(
            model=SMOL_ID, prompt="The ocean is", max_tokens=10, temperature=1.0, seed=5, **extra
        )
        assert out.choices[0].text == reference, extra


def test_max_tokens_null_runs_to_the_context(
    client: openai.OpenAI, gateway: GatewayProcess
) -> None:
    r = httpx.post(
        f"{gateway.base_url}/v1/completions",
        timeout=60,
        json={
            "model": BLOOM_ID,
            "prompt": "a b c",
            "max_tokens": None,
            "temperature": 0,
            "logit_bias": {"2": -100},
        },
    )
    body = r.json()
    assert r.status_code == 200, body
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == 256  # the test config's n_ctx for tiny-bloom


def test_max_tokens_over_the_context_names_both_numbers(gateway: GatewayProcess) -> None:
    r = httpx.post(
        f"{gateway.base_url}/v1/completions",
        json={"model": BLOOM_ID, "prompt": "a b c", "max_tokens": 300},
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "300" in error["message"] and "256" in error["message"]


def test_suffix_on_a_model_without_fim_tokens_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=SMOL_ID, prompt="def f(", suffix="    return x")
    assert err.value.body["param"] == "suffix"  # type: ignore[index]
    assert "fill-in-the-middle" in err.value.message
