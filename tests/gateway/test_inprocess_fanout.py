"""Fan-out, in process over a scripted backend: `n`, prompt lists and `best_of` become
one generation each, numbered as OpenAI numbers choices, with per-candidate seeds,
usage counted as OpenAI counts it, and every sibling closed when one fails or the
client leaves."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from backends.base import Capabilities, GenerationRequest
from backends.errors import InvalidRequest
from tests.support.inprocess import (
    Script,
    ScriptedBackend,
    WithLifespanState,
    asgi_client,
    lifespan,
    scripted_app,
)
from tests.support.schema import validate
from tests.support.wire import assert_envelope, sse_json

pytestmark = pytest.mark.anyio

CAPS = Capabilities(logprobs=True, echo=True, chat_template=True, token_prompts=True)


def generation(request: GenerationRequest) -> int:
    """The generation's number within its call (`<request id>/<k>`)."""
    return int(request.request_id.rsplit("/", 1)[1])


def by_number(request: GenerationRequest) -> Script:
    """Generation k says `g<k>` and has k + 1 prompt tokens."""
    k = generation(request)
    return Script((f"g{k}",), prompt_tokens=k + 1)


async def call(
    body: dict[str, Any], path: str = "/v1/completions", **kw: Any
) -> tuple[dict[str, Any], ScriptedBackend]:
    backend = ScriptedBackend("m", capabilities=CAPS, **kw)
    async with asgi_client(scripted_app(backend)) as client:
        response = await client.post(path, json={"model": "m", **body})
    assert response.status_code == 200, response.text
    return response.json(), backend


async def test_prompt_list_times_n_is_numbered_prompt_major() -> None:
    body = {"prompt": ["a", "b"], "n": 3, "seed": 7}
    out, backend = await call(body, script=by_number)
    validate(out, "CreateCompletionResponse")
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3, 4, 5]
    assert [c["text"] for c in out["choices"]] == [f"g{k}" for k in range(6)]
    requests = sorted(backend.calls.requests, key=generation)
    assert [r.prompt for r in requests] == ["a", "a", "a", "b", "b", "b"]
    assert [r.params.seed for r in requests] == [7, 8, 9, 7, 8, 9]  # differ, reproducibly
    # each prompt counted once (generation 0 has 1 token, generation 3 has 4)
    assert out["usage"] == {"prompt_tokens": 1 + 4, "completion_tokens": 6, "total_tokens": 11}


async def test_token_id_prompts_fan_out_too() -> None:
    out, backend = await call({"prompt": [[1, 2], [3]], "max_tokens": 1})
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert sorted(r.prompt for r in backend.calls.requests) == [(1, 2), (3,)]
    out, backend = await call({"prompt": [5, 6, 7]})
    assert [r.prompt for r in backend.calls.requests] == [(5, 6, 7)]


async def test_without_seed_every_choice_is_unseeded() -> None:
    _, backend = await call({"prompt": "a", "n": 3})
    assert [r.params.seed for r in backend.calls.requests] == [None, None, None]


async def test_chat_n_is_numbered_and_seeded() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "n": 2, "seed": 1}
    out, backend = await call(body, "/v1/chat/completions", script=by_number)
    validate(out, "CreateChatCompletionResponse")
    assert [(c["index"], c["message"]["content"]) for c in out["choices"]] == [
        (0, "g0"),
        (1, "g1"),
    ]
    assert sorted(r.params.seed for r in backend.calls.requests) == [1, 2]
    assert out["usage"]["prompt_tokens"] == 1  # the conversation counted once


def candidate_means(request: GenerationRequest) -> Script:
    """Candidates with distinct mean log-probs in a scrambled order: generation k has
    mean -[5, 1, 3, 2, 4, 0][k] (lower is worse), over k % 2 + 1 tokens."""
    k = generation(request)
    mean = -[5, 1, 3, 2, 4, 0][k]
    count = k % 2 + 1
    return Script(tuple(f"c{k}" for _ in range(count)), logprob=(mean,) * count)


async def test_best_of_keeps_the_n_most_likely_per_prompt_best_first() -> None:
    body = {"prompt": ["p", "q"], "best_of": 3, "n": 2, "temperature": 1, "seed": 5}
    out, backend = await call(body, script=candidate_means)
    validate(out, "CreateCompletionResponse")
    # prompt p: candidates 0, 1, 2 (means -5, -1, -3) -> 1, 2; prompt q: 3, 4, 5 -> 5, 3
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in out["choices"]] == ["c1c1", "c2", "c5c5", "c3c3"]
    assert all(c["logprobs"] is None for c in out["choices"])  # not asked for
    requests = backend.calls.requests
    assert len(requests) == 6 and all(r.logprobs == 0 for r in requests)  # needed to rank
    assert sorted(r.params.seed for r in requests) == [5, 5, 6, 6, 7, 7]
    # usage: every candidate's tokens, each prompt once
    assert out["usage"]["completion_tokens"] == sum(k % 2 + 1 for k in range(6))
    assert out["usage"]["prompt_tokens"] == 3 + 3


async def test_best_of_with_logprobs_returns_them_for_the_kept_candidates() -> None:
    body = {"prompt": "p", "best_of": 3, "n": 1, "logprobs": 2}
    out, backend = await call(body, script=candidate_means)
    (choice,) = out["choices"]
    assert choice["index"] == 0 and choice["text"] == "c1c1"
    assert choice["logprobs"]["token_logprobs"] == [-1.0, -1.0]
    assert all(len(top) == 2 for top in choice["logprobs"]["top_logprobs"])
    assert all(r.logprobs == 2 for r in backend.calls.requests)


async def test_best_of_equal_to_n_is_plain_n() -> None:
    out, backend = await call({"prompt": "p", "best_of": 2, "n": 2}, script=candidate_means)
    assert [c["text"] for c in out["choices"]] == ["c0", "c1c1"]  # no reordering
    assert all(r.logprobs is None for r in backend.calls.requests)


async def test_streamed_choices_interleave_and_each_finishes_once() -> None:
    def two_words(request: GenerationRequest) -> Script:
        k = generation(request)
        return Script((f"a{k}", f" b{k}"), prompt_tokens=4)

    backend = ScriptedBackend("m", capabilities=CAPS, script=two_words)
    body = {"model": "m", "prompt": ["x", "y"], "n": 2, "stream": True}
    body["stream_options"] = {"include_usage": True}
    async with asgi_client(scripted_app(backend)) as client:
        response = await client.post("/v1/completions", json=body)
    chunks, done = sse_json(response)
    assert done
    *choice_chunks, usage = chunks
    texts: dict[int, str] = {}
    finishes: dict[int, int] = {}
    for chunk in choice_chunks:
        (choice,) = chunk["choices"]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
        if choice["finish_reason"]:
            finishes[choice["index"]] = finishes.get(choice["index"], 0) + 1
    assert texts == {k: f"a{k} b{k}" for k in range(4)}
    assert finishes == {0: 1, 1: 1, 2: 1, 3: 1}
    assert usage["usage"] == {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16}


# -- one failing choice stops its siblings ---------------------------------------------


def second_fails_early(request: GenerationRequest) -> Script:
    if generation(request) == 1:
        return Script(fail_with=InvalidRequest("no room for choice 1", "prompt"))
    return Script(("first",), block_after=1)  # then runs until closed


@pytest.mark.parametrize("stream", [False, True])
async def test_a_choice_that_fails_before_its_first_token_fails_the_call(stream: bool) -> None:
    backend = ScriptedBackend("m", capabilities=CAPS, script=second_fails_early)
    async with asgi_client(scripted_app(backend)) as client:
        body = {"model": "m", "prompt": "x", "n": 3, "stream": stream}
        response = await client.post("/v1/completions", json=body)
    error = assert_envelope(response, 400, param="prompt")
    assert "no room" in error["message"]
    calls = backend.calls
    assert calls.running == 0 and not calls.finished
    assert len(calls.abandoned) == 3  # the two started siblings were closed too


@pytest.mark.parametrize("stream", [False, True])
async def test_a_choice_that_fails_midway_closes_the_others(stream: bool) -> None:
    def third_fails_late(request: GenerationRequest) -> Script:
        if generation(request) == 2:
            return Script(("a", "b"), fail_with=RuntimeError("boom"), fail_after=1)
        return Script(("a", "b"), block_after=1)

    backend = ScriptedBackend("m", capabilities=CAPS, script=third_fails_late)
    async with asgi_client(scripted_app(backend)) as client:
        body = {"model": "m", "prompt": "x", "n": 3, "stream": stream}
        response = await client.post("/v1/completions", json=body)
    if stream:
        chunks, done = sse_json(response)
        assert not done and chunks[-1]["error"]["code"] == "internal_error"
    else:
        assert_envelope(response, 500, code="internal_error")
    assert backend.calls.running == 0 and len(backend.calls.abandoned) == 3


# -- the client leaves -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_client_that_leaves_closes_every_generation(stream: bool) -> None:
    """No response can ever complete (every choice runs until closed); the client goes
    away once all of them run, and every one of them must be closed."""
    backend = ScriptedBackend(
        "m", capabilities=CAPS, script=lambda r: Script(("a",), block_after=1)
    )
    app = scripted_app(backend)
    body = json.dumps({"model": "m", "prompt": ["x", "y"], "n": 2, "stream": stream}).encode()
    left = asyncio.Event()
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/completions",
        "raw_path": b"/v1/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    async with lifespan(app) as state:
        task = asyncio.create_task(WithLifespanState(app, state)(scope, receive, send))
        await backend.calls.wait_for(lambda c: c.running == 4)
        left.set()
        await asyncio.wait_for(task, 10)
    assert backend.calls.running == 0
    assert len(backend.calls.abandoned) == 4 and not backend.calls.finished
    if not stream:
        assert sent[0]["status"] == 499  # nobody reads it; the access log says so
