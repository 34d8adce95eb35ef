"""Ollama's API (/api/*) in process over a scripted backend: the request bodies Twinny
and Zed send (recorded from their source), the neutral request each becomes, the
fields Ollama's API documentation gives its answers (plain and as JSON lines), its
`{"error": "..."}` shape, and the model listing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from backends.base import (
    Capabilities,
    Finished,
    GenerationEvent,
    GenerationRequest,
    OutputConstraint,
    TextDelta,
    ToolCall,
    Usage,
)
from tests.support.inprocess import (
    Script,
    ScriptedBackend,
    WithLifespanState,
    asgi_client,
    lifespan,
    scripted_app,
)

pytestmark = pytest.mark.anyio

CAPS = Capabilities(suffix=True, chat_template=True, max_context=2048)
# Ollama's documented fields of a final answer (docs/api.md)
DONE_FIELDS = {
    "model", "created_at", "done", "done_reason", "total_duration", "load_duration",
    "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration",
}  # fmt: skip

# Twinny: fill-in-the-middle with its own FIM template, raw, streamed
TWINNY_FIM = {
    "model": "coder",
    "prompt": "<PRE> def add(a, b): <SUF> <MID>",
    "stream": True,
    "raw": True,
    "keep_alive": "5m",
    "options": {"temperature": 0.2, "num_predict": 512},
}
TWINNY_CHAT = {
    "model": "coder",
    "stream": True,
    "messages": [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": "hi"},
    ],
    "keep_alive": "5m",
    "options": {"temperature": 0.2, "num_predict": 512},
}
# Zed (crates/ollama): its chat request, tools empty, runner options set
ZED_CHAT = {
    "model": "coder:latest",
    "messages": [{"role": "user", "content": "Explain this code"}],
    "stream": True,
    "keep_alive": -1,
    "options": {"num_ctx": 2048, "stop": ["<|im_end|>"], "temperature": 0.7, "top_p": 0.9},
    "tools": [],
}


async def call(
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    backend: ScriptedBackend | None = None,
) -> tuple[httpx.Response, ScriptedBackend]:
    backend = backend or ScriptedBackend("coder", "x + y", capabilities=CAPS)
    async with asgi_client(scripted_app(backend)) as client:
        return await client.request(method, path, json=body), backend


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


async def test_twinny_fim_streams_json_lines_of_a_raw_prompt() -> None:
    response, backend = await call("POST", "/api/generate", TWINNY_FIM)
    assert response.status_code == 200, response.text
    objects = lines(response)
    assert [o["response"] for o in objects] == ["x", " +", " y", ""]
    assert [o["done"] for o in objects] == [False, False, False, True]
    assert set(objects[-1]) >= DONE_FIELDS
    assert objects[-1]["eval_count"] == 3 and objects[-1]["prompt_eval_count"] == 3
    assert objects[-1]["done_reason"] == "length"
    (request,) = backend.calls.requests
    assert request.prompt == TWINNY_FIM["prompt"] and not request.messages  # raw: no template
    assert (request.params.temperature, request.params.max_tokens) == (0.2, 512)


async def test_generate_without_raw_uses_the_chat_template() -> None:
    body = {"model": "coder", "prompt": "hi", "system": "be brief", "stream": False}
    response, backend = await call("POST", "/api/generate", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["response"] == "x + y" and answer["done"] is True
    assert set(answer) >= DONE_FIELDS
    (request,) = backend.calls.requests
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "be brief"),
        ("user", "hi"),
    ]
    # Ollama's defaults
    assert (request.params.temperature, request.params.top_p, request.params.top_k) == (
        0.8,
        0.9,
        40,
    )
    assert request.params.max_tokens is None and request.params.repeat_penalty == 1.1


async def test_generate_with_suffix_is_fill_in_the_middle() -> None:
    body = {"model": "coder", "prompt": "def f(", "suffix": "):\n", "stream": False}
    response, backend = await call("POST", "/api/generate", body)
    assert response.status_code == 200, response.text
    (request,) = backend.calls.requests
    assert (request.prompt, request.suffix) == ("def f(", "):\n")


async def test_suffix_on_a_model_without_fim_is_an_ollama_error() -> None:
    plain = ScriptedBackend("coder", capabilities=Capabilities(chat_template=True))
    body = {"model": "coder", "prompt": "a", "suffix": "b"}
    response, _ = await call("POST", "/api/generate", body, plain)
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and "suffix" in response.json()["error"]


async def test_twinny_and_zed_chat_stream() -> None:
    for body in (TWINNY_CHAT, ZED_CHAT):
        response, backend = await call("POST", "/api/chat", body)
        assert response.status_code == 200, response.text
        objects = lines(response)
        assert "".join(o["message"]["content"] for o in objects) == "x + y"
        assert all(o["message"]["role"] == "assistant" for o in objects)
        assert objects[-1]["done"] is True and set(objects[-1]) >= DONE_FIELDS
        (request,) = backend.calls.requests
        assert request.messages[-1].content == body["messages"][-1]["content"]
        assert request.tools == ()
    assert request.params.stop == ("<|im_end|>",)  # Zed's, with its :latest tag resolved


async def test_chat_not_streamed() -> None:
    response, _ = await call("POST", "/api/chat", {**ZED_CHAT, "stream": False})
    assert response.status_code == 200
    answer = response.json()
    assert answer["message"] == {"role": "assistant", "content": "x + y"}
    assert answer["done"] is True and set(answer) >= DONE_FIELDS


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"format": "json"}, "format"),
        ({"format": {"type": "object"}}, "format"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"options": {"mirostat": 2}}, "mirostat"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        (  # both would constrain the same answer: never one dropped silently
            {
                "format": "json",
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            },
            "format",
        ),
    ],
)
async def test_what_the_model_cannot_honour_is_a_400_in_ollama_shape(
    body: dict[str, Any], field: str
) -> None:
    response, backend = await call("POST", "/api/chat", {**ZED_CHAT, **body})
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and field in response.json()["error"]
    assert backend.calls.requests == []


async def test_unknown_model_is_a_404_in_ollama_shape() -> None:
    response, _ = await call("POST", "/api/generate", {"model": "nope", "prompt": "x"})
    assert response.status_code == 404
    assert set(response.json()) == {"error"} and "nope" in response.json()["error"]


async def test_pulling_is_refused_saying_why() -> None:
    response, _ = await call("POST", "/api/pull", {"model": "llama3"})
    assert response.status_code == 400
    assert "does not download" in response.json()["error"]


async def test_tags_show_version_ps() -> None:
    backend = ScriptedBackend("coder", capabilities=CAPS, details={"size_bytes": 123})
    async with asgi_client(scripted_app(backend)) as client:
        tags = (await client.get("/api/tags")).json()
        show = await client.post("/api/show", json={"model": "coder:latest"})
        version = (await client.get("/api/version")).json()
        ps = (await client.get("/api/ps")).json()
    (entry,) = tags["models"]
    assert entry["name"] == entry["model"] == "coder" and entry["size"] == 123
    assert {"modified_at", "digest", "details"} <= set(entry)
    assert show.status_code == 200
    assert "insert" in show.json()["capabilities"]
    assert show.json()["model_info"]["unknown.context_length"] == 2048
    assert isinstance(version["version"], str)
    assert [m["name"] for m in ps["models"]] == ["coder"]


class CallingBackend(ScriptedBackend):
    """Declares structured output and tools, and ends each generation with one call of
    the first tool, as a backend that enforces tools does."""

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.calls.requests.append(request)
        yield TextDelta("", (0,))
        call = ToolCall("call_0", request.tools[0].name, '{"city": "Paris"}')
        yield Finished("tool_calls", Usage(3, 1), tool_calls=(call,))


async def test_format_and_tools_reach_a_backend_that_enforces_them() -> None:
    caps = Capabilities(chat_template=True, features=frozenset({"response_format", "tools"}))
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    response, backend = await call(
        "POST",
        "/api/chat",
        {**ZED_CHAT, "format": schema},
        CallingBackend("coder", capabilities=caps),
    )
    assert response.status_code == 200, response.text
    assert backend.calls.requests[0].constraint == OutputConstraint("json_schema", schema)
    body = {**ZED_CHAT, "tools": [weather]}
    response, backend = await call(
        "POST", "/api/chat", body, CallingBackend("coder", capabilities=caps)
    )
    assert response.status_code == 200, response.text
    (request,) = backend.calls.requests
    assert [(t.name, t.description, dict(t.parameters)) for t in request.tools] == [
        ("get_weather", "The weather in a city", weather["function"]["parameters"])
    ]
    last = lines(response)[-1]
    expected = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert last["message"]["tool_calls"] == expected
    assert last["done"] is True and last["done_reason"] == "stop"
    plain, _ = await call(
        "POST", "/api/chat", {**body, "stream": False}, CallingBackend("coder", capabilities=caps)
    )
    assert plain.json()["message"] == {"role": "assistant", "content": "", "tool_calls": expected}


async def test_tool_history_round_trips_into_neutral_messages() -> None:
    caps = Capabilities(chat_template=True)
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    body = {"model": "coder", "messages": messages, "stream": False}
    response, backend = await call(
        "POST", "/api/chat", body, ScriptedBackend("coder", capabilities=caps)
    )
    assert response.status_code == 200, response.text
    assistant, tool = backend.calls.requests[0].messages[1:]
    assert [(c.name, json.loads(c.arguments)) for c in assistant.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert (tool.role, tool.content, tool.name) == ("tool", "sunny", "get_weather")


async def test_a_stream_cut_at_shutdown_ends_with_an_ollama_error_line() -> None:
    """Past the shutdown grace period, a JSON-lines stream that has begun ends with
    Ollama's {"error"} line (not an SSE event). Driven over raw ASGI, to expire the
    grace period once the first line has been sent."""
    script = Script(("a",), block_after=1)  # one token, then it waits forever
    backend = ScriptedBackend("coder", capabilities=CAPS, script=lambda r: script)
    app = scripted_app(backend)
    sent: list[bytes] = []
    first_line = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message.get("body", b""))
            if b"\n" in b"".join(sent):
                first_line.set()

    payload = json.dumps(ZED_CHAT).encode()
    messages = [{"type": "http.request", "body": payload, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays
        raise AssertionError

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/chat", "raw_path": b"/api/chat", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
    }  # fmt: skip
    async with lifespan(app) as state:
        task = asyncio.create_task(WithLifespanState(app, state)(scope, receive, send))
        await asyncio.wait_for(first_line.wait(), 30)
        app.state.drain.expire()
        await asyncio.wait_for(task, 30)
    *_, last = [json.loads(line) for line in b"".join(sent).splitlines() if line]
    assert set(last) == {"error"} and "shutting down" in last["error"]
    assert backend.calls.abandoned == [backend.calls.requests[0].request_id]


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/api/generate", {"model": "coder"}, "response"),
        ("/api/chat", {"model": "coder:latest", "messages": []}, "message"),
    ],
)
async def test_a_load_request_is_answered_at_once(
    path: str, body: dict[str, Any], key: str
) -> None:
    """Ollama clients preload a model with an empty prompt (or no messages); that must
    not start a generation (num_predict -1 would run to the end of the context)."""
    response, backend = await call("POST", path, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["done"] is True and answer["done_reason"] == "load" and key in answer
    assert answer["model"] == "coder"
    assert backend.calls.requests == []
    missing, _ = await call("POST", path, {**body, "model": "nope"})
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
