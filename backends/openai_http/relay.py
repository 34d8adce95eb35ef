"""Turn one upstream 2xx response into neutral events, chunk by chunk as they arrive.

Text is yielded the moment its chunk is parsed; the `Finished` event waits for the
usage chunk that follows the finish reason (or for `[DONE]`). Failures before the
first event are `RetryableError`s where another replica could serve the request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx

from backends.base import Finished, GenerationEvent, TextDelta, Usage
from backends.errors import UpstreamError
from backends.openai_http import errors
from backends.openai_http.wire import ChunkPiece, read_chunk, sse_data


async def relay(
    response: httpx.Response,
    is_chat: bool,
    deadline: float,
    total_timeout: float,
    chunk_timeout: float,
) -> AsyncIterator[GenerationEvent]:
    content_type = response.headers.get("content-type", "")
    if "text/event-stream" not in content_type:
        # An upstream that ignored `stream: true` (or was asked not to stream).
        async for event in _whole(response, is_chat, deadline, total_timeout, chunk_timeout):
            yield event
        return
    finish: ChunkPiece | None = None
    usage: Usage | None = None
    deltas = 0
    started = False
    data_events = aiter(sse_data(response.aiter_bytes()))
    loop = asyncio.get_running_loop()
    while True:
        # httpx's read timeout bounds each wait (chunk_timeout); the total deadline is
        # checked per chunk, which is cheaper than a timer per chunk.
        try:
            data = await anext(data_events)
        except StopAsyncIteration:
            break
        except httpx.TransportError as exc:
            raise _stream_failure(exc, started, chunk_timeout) from None
        if loop.time() > deadline:
            raise errors.total_timeout(total_timeout)
        if data == "[DONE]":
            # Read to the end of the body: only a fully read response returns its
            # connection to the pool (otherwise every request pays a new connect).
            async for _ in data_events:
                pass
            break
        try:
            payload = json.loads(data)
        except ValueError:
            raise errors.malformed("a stream chunk is not JSON") from None
        if isinstance(payload, dict) and "error" in payload:
            raise errors.from_stream_error(payload)
        try:
            piece = read_chunk(payload, is_chat)
        except ValueError as exc:
            raise errors.malformed(str(exc)) from None
        if piece.usage is not None:
            usage = piece.usage
        if piece.text:
            started = True
            deltas += 1
            yield TextDelta(piece.text)
        if piece.finish_reason is not None:
            finish = piece
    if finish is None or finish.finish_reason is None:
        raise errors.ended_early() if started else errors.RetryableError(
            "The upstream server closed the stream without an answer.",
            502, "server_error", "upstream_disconnected",
        )
    # Upstreams that ignore stream_options: count one token per chunk, as most send.
    yield Finished(finish.finish_reason, usage or Usage(0, deltas))


async def _whole(
    response: httpx.Response,
    is_chat: bool,
    deadline: float,
    total_timeout: float,
    chunk_timeout: float,
) -> AsyncIterator[GenerationEvent]:
    try:
        async with asyncio.timeout_at(deadline):
            body = await response.aread()
    except TimeoutError:
        raise errors.total_timeout(total_timeout) from None
    except httpx.TransportError as exc:
        raise _stream_failure(exc, False, chunk_timeout) from None
    try:
        payload = json.loads(body)
    except ValueError:
        raise errors.malformed("the body is not JSON") from None
    try:
        piece = read_chunk(payload, is_chat)
    except ValueError as exc:
        raise errors.malformed(str(exc)) from None
    if piece.text:
        yield TextDelta(piece.text)
    yield Finished(piece.finish_reason or "stop", piece.usage or Usage(0, 0))


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
