"""The one code path behind /v1/completions and /v1/chat/completions: check the call
against the backend's capabilities, start every choice, then either stream the
events as SSE or collect them into one response body."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from backends.base import Capabilities, Finished, GenerationRequest, TextDelta, Usage
from gateway.errors import to_api_error
from gateway.generation import (
    ChoiceOutcome,
    ChoiceStream,
    FirstToken,
    collect,
    merge,
    open_choices,
    total_usage,
    unless_disconnected,
)
from gateway.handlers.common import registry
from gateway.middleware import AccessRecord, access_record
from gateway.openai.common import fingerprint
from gateway.sse import EventStream

log = structlog.get_logger("gateway.serving")


class Call(Protocol):
    model: str
    stream: bool
    include_usage: bool

    @property
    def per_prompt(self) -> int: ...
    def check(self, caps: Capabilities) -> None: ...
    def requests(self, request_id: str) -> list[GenerationRequest]: ...
    def select(self, outcomes: list[ChoiceOutcome]) -> list[ChoiceOutcome]: ...


class Encoder(Protocol):
    def response(self, outcomes: list[ChoiceOutcome], usage: Usage) -> dict[str, Any]: ...
    def opening(self, index: int) -> list[dict[str, Any]]: ...
    def delta(self, index: int, event: TextDelta) -> dict[str, Any] | None: ...
    def finish(self, index: int, event: Finished) -> dict[str, Any]: ...
    def usage_chunk(self, usage: Usage) -> dict[str, Any]: ...


class EncoderFactory(Protocol):
    def __call__(self, call: Any, fingerprint: str) -> Encoder: ...


async def serve_call(request: Request, call: Call, make_encoder: EncoderFactory) -> Response:
    record = access_record(request.scope)
    record.model, record.stream = call.model, call.stream
    backend = registry(request).get(call.model)
    call.check(backend.capabilities)
    encoder = make_encoder(call, fingerprint(backend.info()))
    first_token = FirstToken()
    streams = await unless_disconnected(
        request.receive, open_choices(backend, call.requests(request.state.request_id))
    )
    if call.stream:
        return EventStream(_sse(call, streams, encoder, first_token, record), ping_seconds=15)
    outcomes = await unless_disconnected(request.receive, collect(streams, first_token))
    usage = total_usage([o.usage for o in outcomes], call.per_prompt)
    _account(record, usage, first_token)
    return JSONResponse(encoder.response(call.select(outcomes), usage))


def _account(record: AccessRecord, usage: Usage, first_token: FirstToken) -> None:
    record.prompt_tokens = usage.prompt_tokens
    record.completion_tokens = usage.completion_tokens
    record.ttft_ms = first_token.ms


def sse_event(payload: dict[str, Any] | str) -> bytes:
    """One SSE event, framed as OpenAI frames it: `data: ...` and a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return b"data: " + data.encode() + b"\n\n"


async def _sse(
    call: Call,
    streams: Sequence[ChoiceStream],
    encoder: Encoder,
    first_token: FirstToken,
    record: AccessRecord,
) -> AsyncIterator[bytes]:
    usages: dict[int, Usage] = {}
    try:
        for stream in streams:
            for chunk in encoder.opening(stream.index):
                yield sse_event(chunk)
        async with contextlib.aclosing(merge(streams)) as events:
            async for index, event in events:
                if isinstance(event, TextDelta):
                    first_token.seen(event)
                    chunk = encoder.delta(index, event)
                    if chunk is not None:
                        yield sse_event(chunk)
                else:
                    usages[index] = event.usage
                    yield sse_event(encoder.finish(index, event))
    except Exception as exc:
        # Headers are gone; the OpenAI SDK raises on an `error` object in the stream.
        error = to_api_error(exc)
        if error.status >= 500:
            log.error("stream failed", exc_info=exc)
        record.error = error.code or error.type
        yield sse_event(error.body())
        return
    usage = total_usage([usages[i] for i in sorted(usages)], call.per_prompt)
    _account(record, usage, first_token)
    if call.include_usage:
        yield sse_event(encoder.usage_chunk(usage))
    yield sse_event("[DONE]")
