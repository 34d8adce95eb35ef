"""SSE framing and streamed shapes, in process over a scripted backend: `data:` events,
`[DONE]`, the usage chunk of `include_usage`, the chat deltas, log-prob offsets across
chunks, and a failure after the headers as an `error` event, checked on the raw bytes,
against OpenAI's schemas, and through the official SDK (its own client code, on an
in-process transport)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from backends.base import Capabilities
from backends.errors import BackendError
from tests.support.inprocess import Script, ScriptedBackend, asgi_client, scripted_app
from tests.support.schema import validate
from tests.support.wire import assert_envelope, sse_events, sse_json

pytestmark = pytest.mark.anyio

CAPS = Capabilities(logprobs=True, echo=True, chat_template=True)
CHAT = [{"role": "user", "content": "hi"}]


async def stream(
    body: dict[str, Any], path: str = "/v1/completions", **kw: Any
) -> tuple[httpx.Response, ScriptedBackend]:
    backend = ScriptedBackend("m", capabilities=CAPS, **kw)
    async with asgi_client(scripted_app(backend)) as client:
        response = await client.post(path, json={"model": "m", "stream": True, **body})
    return response, backend


async def test_completion_stream_framing_and_done() -> None:
    response, _ = await stream({"prompt": "x"}, text="one two three")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks, done = sse_json(response)
    assert done
    assert [c["choices"][0]["text"] for c in chunks] == ["one", " two", " three", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "length"]
    for chunk in chunks:
        validate(chunk, "CreateCompletionStreamChunk")
        assert "usage" not in chunk  # only present when include_usage is asked for
        assert chunk["object"] == "text_completion"
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("cmpl-")
    assert len({c["created"] for c in chunks}) == 1


async def test_include_usage_adds_one_usage_chunk_and_null_elsewhere() -> None:
    body = {"prompt": "x", "stream_options": {"include_usage": True}}
    response, _ = await stream(body, text="a b c d e")
    chunks, done = sse_json(response)
    assert done
    *text_chunks, usage_chunk = chunks
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    validate(usage_chunk, "CreateCompletionResponse")
    assert all(c["usage"] is None for c in text_chunks)
    body["stream_options"] = {"include_usage": False}
    chunks, _ = sse_json((await stream(body))[0])
    assert all("usage" not in c for c in chunks)


async def test_empty_deltas_send_nothing() -> None:
    """Text held back by the backend (a partial character, a possible stop string)
    arrives as empty deltas: no empty chunk goes out for them."""
    response, _ = await stream({"prompt": "x"}, script=lambda r: Script(("a", "", "", "b")))
    chunks, _ = sse_json(response)
    assert [c["choices"][0]["text"] for c in chunks] == ["a", "b", ""]


async def test_streamed_logprobs_offsets_run_on_across_chunks() -> None:
    response, _ = await stream({"prompt": "xy", "echo": True, "logprobs": 1}, text="hello world")
    chunks, done = sse_json(response)
    assert done
    texts = [c["choices"][0]["text"] for c in chunks]
    assert texts == ["xy", "hello", " world", ""]
    blocks = [c["choices"][0]["logprobs"] for c in chunks[:-1]]
    assert [b["text_offset"] for b in blocks] == [[0], [2], [7]]
    assert blocks[0]["token_logprobs"] == [None] and blocks[0]["top_logprobs"] == [None]
    assert blocks[1]["tokens"] == ["hello"] and blocks[1]["top_logprobs"] == [{"hello": -1.0}]
    # The echoed first token's null is what OpenAI sends, though its schema says number.
    for chunk in chunks[1:]:
        validate(chunk, "CreateCompletionStreamChunk")


async def test_chat_stream_role_first_then_content_then_finish() -> None:
    body = {"messages": CHAT, "stream_options": {"include_usage": True}}
    response, _ = await stream(body, "/v1/chat/completions", text="Paris is nice")
    chunks, done = sse_json(response)
    assert done
    first, *middle, last, usage = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert [c["choices"][0]["delta"] for c in middle] == [
        {"content": "Paris"},
        {"content": " is"},
        {"content": " nice"},
    ]
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in [first, *middle])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    assert all(c["usage"] is None for c in chunks[:-1])
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        validate(chunk, "CreateChatCompletionStreamChunk")
    assert len({c["id"] for c in chunks}) == 1 and first["id"].startswith("chatcmpl-")


async def test_chat_stream_logprobs_per_delta() -> None:
    body = {"messages": CHAT, "logprobs": True, "top_logprobs": 2}
    response, _ = await stream(body, "/v1/chat/completions", text="a b")
    chunks, _ = sse_json(response)
    contents = [c["choices"][0]["logprobs"] for c in chunks[1:-1]]
    assert [c["content"][0]["token"] for c in contents] == ["a", " b"]
    assert contents[1]["content"][0]["bytes"] == list(b" b")
    assert len(contents[1]["content"][0]["top_logprobs"]) == 2
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamChunk")


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_failure_after_headers_is_an_error_event_without_done(path: str) -> None:
    secret = RuntimeError("boom in /secret/path/engine.py line 42")
    body = {"prompt": "x"} if path == "/v1/completions" else {"messages": CHAT}
    response, backend = await stream(
        body, path, text="hello big world", fail_with=secret, fail_after=2
    )
    assert response.status_code == 200  # the headers were already sent
    events = sse_events(response)
    assert "[DONE]" not in events
    chunks, done = sse_json(response)
    assert not done
    error = chunks[-1]
    validate(error, "ErrorResponse")
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["type"] == "server_error"
    assert "secret" not in response.text and "engine.py" not in response.text
    texts = [
        c["choices"][0].get("text") or c["choices"][0]["delta"].get("content") for c in chunks[:-1]
    ]
    assert [t for t in texts if t] == ["hello", " big"]
    assert backend.calls.running == 0


async def test_backend_error_message_reaches_the_error_event() -> None:
    fail = BackendError("the engine ran out of memory")
    response, _ = await stream({"prompt": "x"}, fail_with=fail, fail_after=1)
    chunks, done = sse_json(response)
    assert not done and "out of memory" in chunks[-1]["error"]["message"]


async def test_failure_before_the_first_event_is_a_plain_status() -> None:
    """Every choice is primed before the headers: an early failure gets its status,
    not a 200 stream holding an error."""
    response, _ = await stream({"prompt": "x"}, fail_with=BackendError("no memory"))
    assert_envelope(response, 500)
    assert not response.headers["content-type"].startswith("text/event-stream")


async def test_the_sdk_reads_streams_and_raises_on_the_error_event() -> None:
    good = ScriptedBackend("good", "hello there", capabilities=CAPS)
    bad = ScriptedBackend("bad", "hello big world", RuntimeError("x"), 2, capabilities=CAPS)
    async with asgi_client(scripted_app([good, bad])) as http:
        sdk = openai.AsyncOpenAI(
            base_url="http://127.0.0.1/v1", api_key="x", http_client=http, max_retries=0
        )
        chunks = [
            c
            async for c in await sdk.completions.create(
                model="good", prompt="x", stream=True, stream_options={"include_usage": True}
            )
        ]
        assert "".join(c.choices[0].text for c in chunks if c.choices) == "hello there"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
        chat = [
            c
            async for c in await sdk.chat.completions.create(
                model="good",
                messages=CHAT,
                stream=True,  # type: ignore[arg-type]
            )
        ]
        assert chat[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chat) == "hello there"
        received = []
        with pytest.raises(openai.APIError):
            async for chunk in await sdk.completions.create(model="bad", prompt="x", stream=True):
                received.append(chunk.choices[0].text)
        assert received == ["hello", " big"]
        with pytest.raises(openai.NotFoundError):
            await sdk.completions.create(model="nope", prompt="x", stream=True)
