"""Turn one upstream 2xx response into neutral events, chunk by chunk as they arrive.

Text is yielded the moment its chunk is parsed; the `Finished` event waits for the
usage chunk that follows the finish reason (or for `[DONE]`). Failures before the
first event are `RetryableError`s where another replica could serve the request.
Every wait on the upstream is bounded by its `Exchange` (the total deadline and the
longest silence between data events), and every read by a byte limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from backends.base import Finished, FinishReason, GenerationEvent, TextDelta, Usage
from backends.errors import UpstreamError
from backends.openai_http import errors
from backends.openai_http.logprobs import split_prompt
from backends.openai_http.wire import ChunkPiece, ToolCallAccumulator, read_chunk, sse_data

T = TypeVar("T")
DRAIN_SECONDS = 1.0  # after [DONE]: how long to wait for the body's end (connection reuse)
DRAIN_EVENTS = 8


@dataclass(frozen=True, slots=True)
class Limits:
    total_timeout: float
    chunk_timeout: float
    max_response_bytes: int
    max_event_bytes: int


class Exchange:
    """The time budget of one request to the upstreams, retries included: a deadline
    over everything, and the longest wait for any one thing (the response headers, the
    next data event, the next piece of a body). Comments (`: ping`) and headers that
    trickle in byte by byte reset neither."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._loop = asyncio.get_running_loop()
        self.deadline = self._loop.time() + limits.total_timeout

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await within both bounds; a bound that expires is the 504 that names it."""
        idle_end = self._loop.time() + self.limits.chunk_timeout
        total_first = self.deadline <= idle_end
        timeout = asyncio.timeout_at(min(self.deadline, idle_end))
        try:
            async with timeout:
                return await awaitable
        except TimeoutError:
            if not timeout.expired():
                raise
            if total_first:
                raise errors.total_timeout(self.limits.total_timeout) from None
            raise errors.idle_timeout(self.limits.chunk_timeout) from None


async def relay(
    response: httpx.Response, is_chat: bool, exchange: Exchange, echo: str | None = None
) -> AsyncIterator[GenerationEvent]:
    """`echo`: the prompt, when the upstream was asked to echo it: its first text is
    that prompt (as this gateway and vLLM stream it), marked `is_prompt`."""
    content_type = response.headers.get("content-type", "")
    if "text/event-stream" not in content_type:
        # An upstream that ignored `stream: true` (or was asked not to stream).
        async for event in _whole(response, is_chat, exchange, echo):
            yield event
        return
    finish: ChunkPiece | None = None
    usage: Usage | None = None
    deltas = 0
    started = False
    calls = ToolCallAccumulator()
    data_events = aiter(sse_data(response.aiter_bytes(), exchange.limits.max_event_bytes))
    while True:
        try:
            data = await _next(data_events, exchange, started)
        except StopAsyncIteration:
            break
        if data == "[DONE]":
            await _drain(data_events, exchange)
            break
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            raise errors.malformed("a stream chunk is not JSON") from None
        if isinstance(payload, dict) and "error" in payload:
            raise errors.from_stream_error(payload)
        try:
            piece = read_chunk(payload, is_chat)
        except ValueError as exc:
            raise errors.malformed(str(exc)) from None
        if piece.usage is not None:
            usage = piece.usage
        calls.add(piece.tool_calls)
        if piece.text or piece.logprobs:
            prompt = echo is not None and not started
            started = True
            deltas += 0 if prompt else 1
            yield TextDelta(piece.text, (), piece.logprobs, is_prompt=prompt)
        if piece.finish_reason is not None:
            finish = piece
    if finish is None or finish.finish_reason is None:
        raise errors.ended_early() if started else errors.RetryableError(
            "The upstream server closed the stream without an answer.",
            502, "server_error", "upstream_disconnected",
        )
    # Upstreams that ignore stream_options: count one token per chunk, as most send.
    yield _finished(finish.finish_reason, usage or Usage(0, deltas), calls)


def _finished(reason: FinishReason, usage: Usage, calls: ToolCallAccumulator) -> Finished:
    """The finish, with the upstream's tool calls (then the reason is "tool_calls",
    whatever the upstream named it)."""
    try:
        tool_calls = calls.calls()
    except ValueError as exc:
        raise errors.malformed(str(exc)) from None
    return Finished("tool_calls" if tool_calls else reason, usage, tool_calls)


async def _next(events: AsyncIterator[T], exchange: Exchange, started: bool) -> T:
    """The next item of an upstream body, with every failure mapped."""
    try:
        return await exchange.wait(anext(events))
    except httpx.TransportError as exc:  # the cause stays for the log, never the client
        raise _stream_failure(exc, started, exchange.limits.chunk_timeout) from exc
    except httpx.DecodingError as exc:
        raise errors.malformed("its content encoding is broken") from exc
    except ValueError as exc:  # an event over the limit, or not UTF-8
        raise errors.malformed(str(exc)) from None


async def _drain(events: AsyncIterator[str], exchange: Exchange) -> None:
    """Read to the end of the body after `[DONE]`: only a fully read response returns its
    connection to the pool. Best effort and bounded: the answer is complete already,
    and a connection that is not drained is simply closed."""
    loop = asyncio.get_running_loop()
    end = min(exchange.deadline, loop.time() + DRAIN_SECONDS)
    with contextlib.suppress(StopAsyncIteration, TimeoutError, ValueError, httpx.HTTPError):
        async with asyncio.timeout_at(end):
            for _ in range(DRAIN_EVENTS):
                await anext(events)


async def _whole(
    response: httpx.Response, is_chat: bool, exchange: Exchange, echo: str | None = None
) -> AsyncIterator[GenerationEvent]:
    body = await read_body(response, exchange, exchange.limits.max_response_bytes)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise errors.malformed("the body is not JSON") from None
    try:
        piece = read_chunk(payload, is_chat)
    except ValueError as exc:
        raise errors.malformed(str(exc)) from None
    text, entries = piece.text, piece.logprobs
    if echo is not None:
        prompt, prompt_entries, text, entries = split_prompt(text, entries, echo)
        yield TextDelta(prompt, (), prompt_entries, is_prompt=True)
    if text or entries:
        yield TextDelta(text, (), entries)
    calls = ToolCallAccumulator()
    calls.add(piece.tool_calls)
    yield _finished(piece.finish_reason or "stop", piece.usage or Usage(0, 0), calls)


async def read_body(
    response: httpx.Response, exchange: Exchange, limit: int, cut: bool = False
) -> bytes:
    """A whole body, counted as it streams in and never buffered past `limit` bytes:
    a longer one is a 502 (refused from its declared length when there is one), or with
    `cut` its first `limit` bytes."""
    declared = response.headers.get("content-length", "")
    if not cut and declared.isdigit() and int(declared) > limit:
        raise errors.malformed(f"a body of {declared} bytes is over the {limit}-byte limit")
    body = bytearray()
    chunks = response.aiter_bytes()
    while True:
        try:
            body += await _next(chunks, exchange, False)
        except StopAsyncIteration:
            return bytes(body)
        if len(body) > limit:
            if cut:
                return bytes(body[:limit])
            raise errors.malformed(f"the body is over the {limit}-byte limit")


def _stream_failure(
    exc: httpx.TransportError, started: bool, chunk_timeout: float
) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return errors.from_transport(exc, chunk_timeout)
    if started:
        return errors.ended_early()
    return errors.RetryableError(
        "The upstream server closed the connection before answering.",
        502, "server_error", "upstream_disconnected",
    )
