"""llama.cpp server's endpoints for editors (/infill, /completion, /props), in process
over a scripted backend: the request bodies llama.vscode and llama.vim send (recorded
from their source), the neutral request they become, the answer's fields and the
stream's `data:` events, `t_max_predict_ms`, and refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from backends.base import Capabilities, GenerationEvent, TextDelta
from gateway.generation import ChoiceStream
from gateway.llamacpp.stopping import dedent_cut, stop_early
from tests.support.inprocess import Script, ScriptedBackend, asgi_client, scripted_app

pytestmark = pytest.mark.anyio

FIM = Capabilities(
    suffix=True, chat_template=True, max_context=2048, features=frozenset({"fim_context"})
)

# llama.vscode (src/llama-server.ts): a completion, then its warm-up of the next one
VSCODE_INFILL = {
    "input_prefix": "def add(a, b):\n",
    "input_suffix": "\n\nprint(add(1, 2))\n",
    "input_extra": [
        {"text": "def sub(a, b):\n    return a - b\n", "time": 1732000000, "filename": "ops.py"}
    ],
    "prompt": "    return ",
    "n_predict": 128,
    "top_k": 40,
    "top_p": 0.99,
    "stream": False,
    "samplers": ["top_k", "top_p", "infill"],
    "cache_prompt": True,
    "n_indent": 4,
    "t_max_prompt_ms": 500,
    "t_max_predict_ms": 1000,
}
VSCODE_WARMUP = {
    **VSCODE_INFILL,
    "n_predict": 0,
    "samplers": [],
    "t_max_prompt_ms": 1,
    "t_max_predict_ms": 1,
    "response_fields": [""],
}
# llama.vim (autoload/llama.vim): the ring-buffer chunks and the fields it reads back
VIM_INFILL = {
    "input_prefix": "import os\n",
    "input_suffix": "\n",
    "input_extra": [{"text": "x = 1\n", "time": 0.0, "filename": "a.py"}],
    "prompt": "print(",
    "n_predict": 128,
    "n_indent": 0,
    "top_k": 40,
    "top_p": 0.99,
    "stream": False,
    "samplers": ["top_k", "top_p", "infill"],
    "cache_prompt": True,
    "t_max_prompt_ms": 500,
    "t_max_predict_ms": 500,
    "response_fields": [
        "content",
        "timings/prompt_n",
        "timings/prompt_ms",
        "timings/prompt_per_token_ms",
        "timings/prompt_per_second",
        "timings/predicted_n",
        "timings/predicted_ms",
        "timings/predicted_per_token_ms",
        "timings/predicted_per_second",
        "truncated",
        "tokens_cached",
    ],
}


async def post(
    path: str, body: dict[str, Any], backend: ScriptedBackend | None = None
) -> tuple[httpx.Response, ScriptedBackend]:
    backend = backend or ScriptedBackend("coder", "x + y", capabilities=FIM)
    async with asgi_client(scripted_app(backend)) as client:
        return await client.post(path, json=body), backend


async def test_llama_vscode_infill_becomes_fim_with_repository_context() -> None:
    response, backend = await post("/infill", VSCODE_INFILL)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == "x + y"
    assert body["stop"] is True and body["truncated"] is False
    assert body["stop_type"] == "limit"  # the scripted backend finishes with "length"
    assert body["tokens_cached"] == 3 + 3  # the scripted prompt's 3 tokens, 3 generated
    timings = body["timings"]
    assert timings["prompt_n"] == 3 and timings["predicted_n"] == 3
    assert timings["prompt_ms"] >= 0 and timings["predicted_ms"] >= 0
    (request,) = backend.calls.requests
    assert request.prompt == "def add(a, b):\n    return "  # input_prefix, then prompt
    assert request.suffix == "\n\nprint(add(1, 2))\n"
    assert request.context_files == (("ops.py", "def sub(a, b):\n    return a - b\n"),)
    assert request.params.max_tokens == 128
    assert (request.params.top_k, request.params.top_p) == (40, 0.99)


async def test_llama_vscode_warm_up_generates_nothing() -> None:
    response, backend = await post("/infill", VSCODE_WARMUP)
    assert response.status_code == 200, response.text
    assert response.json() == {}  # response_fields [""] names nothing
    (request,) = backend.calls.requests
    assert request.params.max_tokens == 0


async def test_llama_vim_infill_gets_exactly_its_response_fields() -> None:
    response, backend = await post("/infill", VIM_INFILL)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == set(VIM_INFILL["response_fields"])
    assert body["content"] == "x + y" and body["timings/predicted_n"] == 3
    assert backend.calls.requests[0].prompt == "import os\nprint("


async def test_infill_on_a_model_without_fim_tokens_is_a_400_naming_the_field() -> None:
    plain = ScriptedBackend("coder", capabilities=Capabilities(chat_template=True))
    response, backend = await post("/infill", VSCODE_INFILL, plain)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input_suffix" and "FIM" in error["message"]
    assert backend.calls.requests == []


async def test_input_extra_on_a_backend_that_cannot_lay_it_out_is_a_400() -> None:
    """A FIM backend without repository context (a remote upstream's `suffix`) must not
    drop the other files' chunks silently."""
    caps = Capabilities(suffix=True, chat_template=True)
    response, backend = await post(
        "/infill", VSCODE_INFILL, ScriptedBackend("c", capabilities=caps)
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_extra"
    assert backend.calls.requests == []
    without, _ = await post(
        "/infill", {**VSCODE_INFILL, "input_extra": []}, ScriptedBackend("c", capabilities=caps)
    )
    assert without.status_code == 200, without.text


async def test_infill_bad_input_extra_is_a_400() -> None:
    response, _ = await post("/infill", {**VSCODE_INFILL, "input_extra": [{"text": 3}]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_extra"


async def test_t_max_predict_ms_ends_a_generation_after_its_first_line() -> None:
    """The model writes a line, then stalls (an endless generation): the answer comes
    once the time is up, with the line, and the generation is closed."""
    backend = ScriptedBackend(
        "coder",
        capabilities=FIM,
        script=lambda r: Script(("x = 1\n", "y"), block_after=1),
    )
    body = {**VSCODE_INFILL, "t_max_predict_ms": 50}
    response, _ = await post("/infill", body, backend)
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "x = 1\n"
    assert response.json()["stop_type"] == "limit"
    assert backend.calls.abandoned == [backend.calls.requests[0].request_id]


async def test_completion_native_shape_and_defaults() -> None:
    response, backend = await post("/completion", {"prompt": "Hello", "n_predict": 8})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == "x + y" and body["stop"] is True
    assert body["tokens_predicted"] == 3 and body["tokens_evaluated"] == 3
    assert body["model"] == "coder"  # no `model`: the first configured one
    params = backend.calls.requests[0].params
    assert (params.max_tokens, params.temperature, params.top_k) == (8, 0.8, 40)
    assert backend.calls.requests[0].suffix is None


async def test_completion_stream_is_data_events_without_done() -> None:
    response, _ = await post("/completion", {"prompt": "Hello", "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.text
    assert "[DONE]" not in raw
    events = [json.loads(line[6:]) for line in raw.split("\n\n") if line.startswith("data: ")]
    assert [e["content"] for e in events] == ["x", " +", " y", ""]
    assert [e["stop"] for e in events] == [False, False, False, True]
    assert events[-1]["timings"]["predicted_n"] == 3


async def test_completion_token_prompt_and_n_predict_minus_one() -> None:
    caps = Capabilities(token_prompts=True, n_vocab=100)
    backend = ScriptedBackend("m", capabilities=caps)
    response, _ = await post("/completion", {"prompt": [1, 2, 3], "n_predict": -1}, backend)
    assert response.status_code == 200, response.text
    assert backend.calls.requests[0].prompt == (1, 2, 3)
    assert backend.calls.requests[0].params.max_tokens is None


@pytest.mark.parametrize("field", ["n_probs", "grammar", "json_schema"])
async def test_completion_refuses_what_it_cannot_honour(field: str) -> None:
    value: Any = 3 if field == "n_probs" else ("root ::= x" if field == "grammar" else {})
    if field == "json_schema":
        value = {"type": "object"}
    response, backend = await post("/completion", {"prompt": "x", field: value})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field
    assert backend.calls.requests == []


async def test_unknown_model_is_a_404() -> None:
    response, _ = await post("/completion", {"prompt": "x", "model": "nope"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_props_has_what_editors_read() -> None:
    backend = ScriptedBackend("coder", capabilities=FIM, details={"parallel": 4})
    async with asgi_client(scripted_app(backend)) as client:
        response = await client.get("/props")
    assert response.status_code == 200
    body = response.json()
    assert body["default_generation_settings"]["n_ctx"] == 2048
    assert body["total_slots"] == 4
    assert body["model_alias"] == "coder" and body["model_path"] == "coder"
    assert body["infill"] is True


@pytest.mark.parametrize(
    ("text", "n_indent", "cut"),
    [
        ("return a\n    b\nprint(x)", 4, len("return a\n    b\n")),
        ("return a\n  b", 4, len("return a\n  ")),  # cut before the line's first character
        ("return a\n    b\n\n    c", 4, None),  # blank lines do not end it
        ("return a\n    b\n  ", 4, None),  # a line not begun yet
        ("x\ny", 0, None),  # no rule without n_indent
        ("\tx\n\ty", 1, None),  # tabs count
    ],
)
def test_dedent_cut(text: str, n_indent: int, cut: int | None) -> None:
    assert dedent_cut(text, n_indent) == cut


@pytest.mark.parametrize("stream", [False, True])
async def test_n_indent_ends_the_completion_at_the_end_of_the_block(stream: bool) -> None:
    """llama.vscode sends the cursor line's indentation as n_indent: a completion
    inside a function body ends where a line would leave that body."""
    tokens = ("x = 1", "\n    ", "y = 2", "\nprint", "(x)", "\n")
    backend = ScriptedBackend(
        "coder", capabilities=FIM, script=lambda r: Script(tokens, block_after=len(tokens))
    )
    body = {**VSCODE_INFILL, "n_indent": 4, "t_max_predict_ms": 0, "stream": stream}
    response, _ = await post("/infill", body, backend)
    assert response.status_code == 200, response.text
    if stream:
        events = [json.loads(x[6:]) for x in response.text.split("\n\n") if x.startswith("data: ")]
        content = "".join(e["content"] for e in events)
        final = events[-1]
    else:
        final = response.json()
        content = final["content"]
    assert content == "x = 1\n    y = 2\n"
    assert final["stop"] is True and final["stop_type"] == "limit"
    assert final["timings"]["predicted_n"] == 4  # the token that crossed the line counts
    assert backend.calls.abandoned == [backend.calls.requests[0].request_id]


async def test_a_stream_closed_after_its_first_event_closes_the_generation() -> None:
    """A client that leaves after the first token: closing the limited stream must close
    the backend's generation (which frees its slot), though the limit never started."""
    closed = asyncio.Event()

    async def generation() -> AsyncIterator[GenerationEvent]:
        try:
            yield TextDelta("a", (0,))
            await asyncio.Event().wait()  # endless
            yield TextDelta("b", (1,))
        finally:
            closed.set()

    source = generation()
    first = await anext(source)  # as open_choices primes every choice
    stream = stop_early(ChoiceStream(0, first, source), 10.0, 4)
    events = stream.events()
    assert await anext(events) == first
    await events.aclose()
    assert closed.is_set()
