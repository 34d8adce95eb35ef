"""POST /v1/completions."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence

import structlog
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from backends.base import Finished, TextDelta, Usage
from gateway.errors import to_api_error
from gateway.generation import (
    ChoiceStream,
    FirstToken,
    collect,
    merge,
    open_choices,
    total_usage,
    unless_disconnected,
)
from gateway.handlers.common import api_endpoint, registry
from gateway.middleware import AccessRecord, access_record
from gateway.openai.completions import (
    ChoiceResult,
    CompletionCall,
    CompletionEncoder,
    check_capabilities,
    fingerprint,
    parse_completion_request,
)
from gateway.openai.params import parse_json_body

log = structlog.get_logger("gateway.completions")


@api_endpoint
async def create_completion(request: Request) -> Response:
    call = parse_completion_request(parse_json_body(await request.body()))
    record = access_record(request.scope)
    record.model, record.stream = call.model, call.stream
    backend = registry(request).get(call.model)
    check_capabilities(call, backend.capabilities, call.model)
    first_token = FirstToken()
    streams = await unless_disconnected(
        request.receive, open_choices(backend, call.requests(request.state.request_id))
    )
    encoder = CompletionEncoder(call.model, fingerprint(backend.info()), call.include_usage)
    if call.stream:
        return EventSourceResponse(
            _sse(call, streams, encoder, first_token, record), sep="\n", ping=15
        )
    outcomes = await unless_disconnected(request.receive, collect(streams, first_token))
    usage = total_usage([o.usage for o in outcomes], call.n)
    _account(record, usage, first_token)
    choices = [
        ChoiceResult(o.index, _echo(call, o.index) + o.text, o.finish_reason) for o in outcomes
    ]
    return JSONResponse(encoder.response(choices, usage))


def _echo(call: CompletionCall, index: int) -> str:
    prompt = call.prompt_of(index)
    return prompt if call.echo and isinstance(prompt, str) else ""


def _account(record: AccessRecord, usage: Usage, first_token: FirstToken) -> None:
    record.prompt_tokens = usage.prompt_tokens
    record.completion_tokens = usage.completion_tokens
    record.ttft_ms = first_token.ms


def _event(payload: dict | str) -> bytes:
    """One SSE event, framed as OpenAI frames it: `data: ...` and a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return b"data: " + data.encode() + b"\n\n"


async def _sse(
    call: CompletionCall,
    streams: Sequence[ChoiceStream],
    encoder: CompletionEncoder,
    first_token: FirstToken,
    record: AccessRecord,
) -> AsyncIterator[bytes]:
    usages: dict[int, Usage] = {}
    try:
        for stream in streams:
            echo = _echo(call, stream.index)
            if echo:
                yield _event(encoder.chunk(stream.index, echo, None))
        async with contextlib.aclosing(merge(streams)) as events:
            async for index, event in events:
                first_token.seen(event)
                if isinstance(event, TextDelta):
                    if event.text:
                        yield _event(encoder.chunk(index, event.text, None))
                elif isinstance(event, Finished):
                    usages[index] = event.usage
                    yield _event(encoder.chunk(index, "", event.finish_reason))
    except Exception as exc:
        # Headers are gone; the OpenAI SDK raises on an `error` object in the stream.
        error = to_api_error(exc)
        if error.status >= 500:
            log.error("stream failed", exc_info=exc)
        record.error = error.code or error.type
        yield _event(error.body())
        return
    usage = total_usage([usages[i] for i in sorted(usages)], call.n)
    _account(record, usage, first_token)
    if call.include_usage:
        yield _event(encoder.usage_chunk(usage))
    yield _event("[DONE]")
