"""The one code path behind /v1/completions and /v1/chat/completions: check the call
against the backend's capabilities, start every choice, then either stream the
events as SSE or collect them into one response body."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from backends.base import Capabilities, Finished, GenerationRequest, TextDelta, Usage
from gateway.errors import APIError, to_api_error
from gateway.framing import OPENAI_SSE, Framing
from gateway.generation import (
    ChoiceOutcome,
    ChoiceStream,
    ClientDisconnected,
    FirstToken,
    Tally,
    collect,
    merge,
    total_usage,
    unless_disconnected,
)
from gateway.handlers.common import registry
from gateway.handlers.routed import open_plan, plan_call, start_shadow, with_route_headers
from gateway.middleware import AccessRecord, access_record
from gateway.openai.common import fingerprint

log = structlog.get_logger("gateway.serving")


class Call(Protocol):
    model: str
    user: str | None
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
    # one chunk, or several (a chat's tool calls come in a chunk before the last one)
    def finish(self, index: int, event: Finished) -> dict[str, Any] | list[dict[str, Any]]: ...
    def usage_chunk(self, usage: Usage) -> dict[str, Any]: ...


class EncoderFactory(Protocol):
    def __call__(self, call: Any, fingerprint: str) -> Encoder: ...


async def serve_call(
    request: Request, call: Call, make_encoder: EncoderFactory, framing: Framing = OPENAI_SSE
) -> Response:
    """`framing`: how the dialect frames a stream (SSE by default; Ollama's JSON lines).
    A call may name its `operation` for the access line (else chat or completion)."""
    record = access_record(request.scope)
    record.model, record.stream = call.model, call.stream
    models = registry(request)
    plan = plan_call(request, call, record)  # which models, under which variant
    record.operation = getattr(call, "operation", None) or (
        "chat" if request.url.path.endswith("/chat/completions") else "completion"
    )
    metrics = request.state.metrics
    metrics.started(call.model)  # ended by the access record's observation
    if plan.experiment is not None and plan.variant is not None:
        metrics.assigned(plan.experiment, plan.variant, plan.assignment or "")
    tap = start_shadow(request, plan, call, models)
    first_token = FirstToken()
    tally = Tally(call.per_prompt)
    served_by = plan.candidates[0]
    try:
        try:
            opened = await open_plan(request, plan, call, models, tally, record)
        except BaseException:
            if tap is not None:
                tap.abandon()
            raise
        served_by, backend = opened.served_by, opened.backend
        streams = tap.wrap(opened.streams) if tap is not None else opened.streams
        limit = getattr(call, "limit_streams", None)  # a dialect's own stopping rule
        if limit is not None:
            streams = limit(streams)
        encoder = make_encoder(call, fingerprint(backend.info()))
        headers = plan.headers(served_by)
        if call.stream:
            events = _sse(
                call,
                streams,
                encoder,
                first_token,
                record,
                tally,
                lambda: models.unavailable(served_by),
                framing,
            )
            response = framing.respond(_closing_early(events, request, record, tally, first_token))
            response.headers.update(headers)  # sent with the headers, before any event
            return response
        outcomes = await unless_disconnected(request.receive, collect(streams, first_token))
    except ClientDisconnected:
        _account_so_far(record, tally, first_token, cancelled=True)
        raise
    except Exception as exc:
        # A model whose engine died answers 503 saying so, not a 500 per request.
        unavailable = models.unavailable(served_by)
        if unavailable is None:
            raise with_route_headers(exc, plan.headers(served_by)) from None
        raise with_route_headers(unavailable, plan.headers(served_by)) from exc
    usage = total_usage([o.usage for o in outcomes], call.per_prompt)
    _account(record, usage, first_token)
    return JSONResponse(encoder.response(call.select(outcomes), usage), headers=headers)


def _account(record: AccessRecord, usage: Usage, first_token: FirstToken) -> None:
    record.prompt_tokens = usage.prompt_tokens
    record.completion_tokens = usage.completion_tokens
    record.ttft_ms = first_token.ms


def _account_so_far(
    record: AccessRecord, tally: Tally, first_token: FirstToken, cancelled: bool = False
) -> None:
    """A call that ended early: the tokens its choices consumed until then."""
    record.prompt_tokens, record.completion_tokens = tally.usage()
    record.ttft_ms = first_token.ms
    if cancelled:
        record.cancelled = True


async def _closing_early(
    events: AsyncIterator[bytes],
    request: Request,
    record: AccessRecord,
    tally: Tally,
    first_token: FirstToken,
) -> AsyncIterator[bytes]:
    """Passes a stream's events on; if it is closed before its end (the client left,
    or the shutdown grace period ended, which the stream's own error event reports),
    the access line gets the tokens so far and, when the client left, `cancelled`."""
    finished = False
    try:
        async with contextlib.aclosing(events):
            async for chunk in events:
                yield chunk
        finished = True
    finally:
        if not finished and record.completion_tokens is None:
            drain = request.scope.get("state", {}).get("drain")
            _account_so_far(
                record, tally, first_token, cancelled=not getattr(drain, "expired", False)
            )


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
    tally: Tally,
    unavailable: Callable[[], APIError | None],
    framing: Framing = OPENAI_SSE,
) -> AsyncIterator[bytes]:
    frame = framing.frame
    usages: dict[int, Usage] = {}
    try:
        for stream in streams:
            for chunk in encoder.opening(stream.index):
                yield frame(chunk)
        async with contextlib.aclosing(merge(streams)) as events:
            async for index, event in events:
                if isinstance(event, TextDelta):
                    first_token.seen(event)
                    chunk = encoder.delta(index, event)
                    if chunk is not None:
                        yield frame(chunk)
                else:
                    usages[index] = event.usage
                    last = encoder.finish(index, event)
                    for chunk in last if isinstance(last, list) else [last]:
                        yield frame(chunk)
    except Exception as exc:
        # Headers are gone; the OpenAI SDK raises on an `error` object in the stream.
        error = unavailable() or to_api_error(exc)
        if error.status >= 500:
            log.error("stream failed", exc_info=exc)
        record.error = error.code or error.type
        _account_so_far(record, tally, first_token)
        yield frame(framing.error(error))
        return
    usage = total_usage([usages[i] for i in sorted(usages)], call.per_prompt)
    _account(record, usage, first_token)
    if call.include_usage:
        yield frame(encoder.usage_chunk(usage))
    if framing.done is not None:
        yield framing.done
