"""Scoring through the live gateway as evaluation harnesses do it: the exact requests
lm-evaluation-harness's `local-completions` sends (and, when it is installed, the
harness itself), the end-of-text token in legacy and chat log-probs, special tokens and
top_logprobs keys over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import SMOL_ID
from tests.support.server import GatewayProcess

END = "<|im_end|>"
CONTEXT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
# SmolLM2 ends its answer after the first continuation: the one sampled token is END.
ENDS = "The capital of France is Paris."
GOES_ON = "Paris."


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> httpx.Client:
    return httpx.Client(base_url=gateway.base_url, timeout=120)


def encode(http: httpx.Client, text: str) -> list[int]:
    """lm-evaluation-harness's RemoteTokenizer.encode, request for request."""
    r = http.post("/tokenize", json={"prompt": text, "add_special_tokens": False})
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert isinstance(tokens, list)
    return tokens


def loglikelihood_payload(prompts: list[list[int]]) -> dict[str, Any]:
    """LocalCompletionsAPI._create_payload(generate=False), field for field."""
    return {
        "model": SMOL_ID,
        "prompt": prompts,
        "temperature": 0,
        "max_tokens": 1,
        "logprobs": 1,
        "seed": 1234,
        "echo": True,
    }


def parse_logprobs(out: dict[str, Any], ctxlens: list[int]) -> list[tuple[float, bool]]:
    """LocalCompletionsAPI.parse_logprobs, as the harness reads the answer."""
    res = []
    choices = sorted(out["choices"], key=lambda c: c["index"])
    for choice, ctxlen in zip(choices, ctxlens, strict=True):
        values = choice["logprobs"]["token_logprobs"][ctxlen:-1]
        tops = choice["logprobs"]["top_logprobs"][ctxlen:-1]
        greedy = all(v == max(top.values()) for v, top in zip(values, tops, strict=True))
        res.append((sum(values), greedy))
    return res


def scored_alone(http: httpx.Client, ids: list[int], ctxlen: int) -> float:
    """The continuation's log-likelihood from echo with no new token at all."""
    body = {**loglikelihood_payload([ids]), "max_tokens": 0}
    choice = http.post("/v1/completions", json=body).json()["choices"][0]
    assert len(choice["logprobs"]["token_logprobs"]) == len(ids)
    return sum(choice["logprobs"]["token_logprobs"][ctxlen:])


def test_loglikelihood_request_gets_prompt_tokens_plus_one(http: httpx.Client) -> None:
    """Whatever the one sampled token is, the answer has prompt tokens + 1 entries, so the
    harness's slice [ctxlen:-1] is exactly the continuation. Before, a sampled end token
    was dropped and the slice lost the continuation's last token."""
    ctx = encode(http, CONTEXT)
    prompts = [encode(http, CONTEXT + cont) for cont in (ENDS, GOES_ON)]
    assert all(p[: len(ctx)] == ctx for p in prompts)
    out = http.post("/v1/completions", json=loglikelihood_payload(prompts)).json()
    ends, goes_on = sorted(out["choices"], key=lambda c: c["index"])
    for choice, ids in zip((ends, goes_on), prompts, strict=True):
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(ids) + 1
        assert len(lp["top_logprobs"]) == len(lp["text_offset"]) == len(ids) + 1
    assert ends["finish_reason"] == "stop" and ends["logprobs"]["tokens"][-1] == END
    assert ends["text"] == CONTEXT + ENDS  # the end token's text is not output
    assert ends["logprobs"]["text_offset"][-1] == len(ends["text"])
    assert goes_on["finish_reason"] == "length" and goes_on["logprobs"]["tokens"][-1] != END
    assert out["usage"]["completion_tokens"] == 2  # the end token counts
    parsed = parse_logprobs(out, [len(ctx), len(ctx)])
    for (value, _), ids in zip(parsed, prompts, strict=True):
        assert value < 0
        assert value == pytest.approx(scored_alone(http, ids, len(ctx)), abs=1e-9)


def test_remote_tokenizer_protocol(http: httpx.Client) -> None:
    """What lm-evaluation-harness's check_remote_tokenizer_support and RemoteTokenizer ask."""
    info = http.get("/tokenizer_info")
    assert info.status_code == 200
    body = info.json()
    assert body["eos_token"] == END and body["bos_token"] == "<|im_start|>"
    assert body["model"] == SMOL_ID and body["max_model_len"] == body["model_max_length"]
    assert "<|im_start|>" in body["chat_template"]
    assert encode(http, "test") == encode(http, "test") != []
    assert encode(http, body["eos_token"]) == [2]
    ids = encode(http, CONTEXT + ENDS)
    back = http.post("/detokenize", json={"tokens": ids}).json()
    assert back["prompt"] == back["content"] == CONTEXT + ENDS


def test_lm_evaluation_harness_scores_through_the_gateway(gateway: GatewayProcess) -> None:
    """The real harness (lm_eval's LocalCompletionsAPI), when installed: it finds the
    gateway's tokenizer by itself and its log-likelihoods are the continuation's exact
    sums."""
    # Installed by the test setup (.ci/dev.py): a missing harness is a failure, not a skip.
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    lm = LocalCompletionsAPI(
        base_url=f"{gateway.base_url}/v1/completions", model=SMOL_ID, max_length=512
    )
    assert lm.tokenizer_backend == "remote" and lm.eot_token_id == 2
    requests = [
        Instance("loglikelihood", {}, (CONTEXT, cont), i) for i, cont in enumerate((ENDS, GOES_ON))
    ]
    results = lm.loglikelihood(requests)
    with httpx.Client(base_url=gateway.base_url, timeout=120) as http:
        # The harness moves the context's trailing whitespace into the continuation.
        ctx = encode(http, CONTEXT.rstrip())
        prompts = [encode(http, CONTEXT + cont) for cont in (ENDS, GOES_ON)]
        out = http.post("/v1/completions", json=loglikelihood_payload(prompts)).json()
        replayed = parse_logprobs(out, [len(ctx)] * 2)
        for (value, greedy), ids, (_, replayed_greedy) in zip(
            results, prompts, replayed, strict=True
        ):
            assert value == pytest.approx(scored_alone(http, ids, len(ctx)), abs=1e-9)
            assert greedy == replayed_greedy


def test_end_token_in_a_stream_matches_the_plain_answer(client: openai.OpenAI) -> None:
    kw: dict[str, Any] = {
        "model": SMOL_ID,
        "prompt": "Hi",
        "max_tokens": 5,
        "temperature": 0,
        "logprobs": 2,
        "echo": True,
        "logit_bias": {"2": 100},  # the end token at once
    }
    plain = client.completions.create(**kw).choices[0]
    lp = plain.logprobs
    assert lp is not None and lp.tokens == ["Hi", END]
    assert plain.text == "Hi" and plain.finish_reason == "stop"
    assert lp.text_offset == [0, 2]
    assert lp.top_logprobs is not None and len(lp.top_logprobs[1]) == 2
    streamed: list[str] = []
    offsets: list[int] = []
    for chunk in client.completions.create(stream=True, **kw):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            streamed += chunk.choices[0].logprobs.tokens or []
            offsets += chunk.choices[0].logprobs.text_offset or []
    assert streamed == lp.tokens and offsets == lp.text_offset


def test_chat_logprobs_leave_out_the_end_token(client: openai.OpenAI) -> None:
    """OpenAI's chat log-probs list the message's tokens, not the end token that closed it;
    completion_tokens still counts it (it was generated)."""
    kw: dict[str, Any] = {
        "model": SMOL_ID,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 5,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
        "logit_bias": {"2": 100},
    }
    out = client.chat.completions.create(**kw)
    choice = out.choices[0]
    assert choice.message.content == "" and choice.finish_reason == "stop"
    assert choice.logprobs is not None and choice.logprobs.content == []
    assert out.usage is not None and out.usage.completion_tokens == 1
    chunks = list(client.chat.completions.create(stream=True, **kw))
    assert all(
        c.choices[0].logprobs is None or not c.choices[0].logprobs.content
        for c in chunks
        if c.choices
    )


def test_special_tokens_and_offsets_over_http(client: openai.OpenAI) -> None:
    text = CONTEXT + ENDS + END
    out = client.completions.create(
        model=SMOL_ID, prompt=text, max_tokens=0, echo=True, logprobs=3
    ).choices[0]
    lp = out.logprobs
    assert lp is not None and lp.tokens is not None and lp.text_offset is not None
    assert "".join(lp.tokens) == out.text == text
    assert lp.tokens.count(END) == 2 and lp.tokens.count("<|im_start|>") == 2
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    assert lp.top_logprobs is not None and END in lp.top_logprobs[-1]


def test_top_logprobs_always_have_as_many_keys_as_asked(client: openai.OpenAI) -> None:
    """Byte pieces of emoji and CJK characters all read "\\ufffd": at most positions of this
    prompt several of the five likeliest tokens share that text (12 of 16 here)."""
    out = client.completions.create(
        model=SMOL_ID, prompt="I love you 😀😀 and 日本語", max_tokens=4, echo=True, logprobs=5
    ).choices[0]
    assert out.logprobs is not None and out.logprobs.top_logprobs is not None
    tops = out.logprobs.top_logprobs
    assert tops[0] is None
    assert all(len(top) == 5 for top in tops[1:])
    assert any("\ufffd" in top for top in tops[1:])


def test_chat_stream_lists_every_token_of_split_characters(client: openai.OpenAI) -> None:
    """An emoji is several byte tokens whose text is held back until the character is
    whole: a stream still carries each token's entry (in chunks with empty content)."""
    kw: dict[str, Any] = {
        "model": SMOL_ID,
        "messages": [{"role": "user", "content": "Reply with three smiley emoji: 😀😀😀"}],
        "max_tokens": 12,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 1,
    }
    plain = client.chat.completions.create(**kw)
    assert plain.choices[0].logprobs is not None and plain.choices[0].logprobs.content
    expected = [e.token for e in plain.choices[0].logprobs.content]
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage is not None and len(expected) == plain.usage.completion_tokens == 12
    streamed: list[str] = []
    texts: list[str] = []
    for chunk in client.chat.completions.create(stream=True, **kw):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            streamed += [e.token for e in chunk.choices[0].logprobs.content or []]
            texts.append(chunk.choices[0].delta.content or "")
    assert streamed == expected
    assert "".join(texts) == plain.choices[0].message.content
    assert "" in texts  # some tokens came before their character was whole
