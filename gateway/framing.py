"""How a dialect frames a stream: OpenAI's and llama.cpp's Server-Sent Events
(`data: {...}` and a blank line; OpenAI ends with `data: [DONE]`), or Ollama's
newline-delimited JSON. The serving path builds one event list; the framing turns it
into bytes, says how an error in the middle of a stream looks, and how it ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from gateway.drain import shutting_down_error
from gateway.errors import APIError
from gateway.sse import EventStream


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def sse_event(payload: dict[str, Any] | str) -> bytes:
    """One SSE event, framed as OpenAI frames it: `data: ...` and a blank line."""
    data = payload.encode() if isinstance(payload, str) else _dumps(payload)
    return b"data: " + data + b"\n\n"


def ndjson_line(payload: dict[str, Any]) -> bytes:
    return _dumps(payload) + b"\n"


class NDJSONStream(EventStream):
    """The same stream machinery (disconnects, shutdown grace) in JSON lines: no SSE
    pings, and a stream cut at the end of the grace period ends with {"error"}."""

    media_type = "application/x-ndjson"

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(events, ping_seconds=0)

    def shutdown_event(self) -> bytes:
        return ndjson_line({"error": shutting_down_error().message})


@dataclass(frozen=True)
class Framing:
    frame: Callable[[dict[str, Any]], bytes]
    error: Callable[[APIError], dict[str, Any]]  # an error once the stream has begun
    done: bytes | None  # the last event after a complete stream, if the dialect has one
    respond: Callable[[AsyncIterator[bytes]], Response]


OPENAI_SSE = Framing(
    frame=sse_event,
    error=lambda error: error.body(),
    done=sse_event("[DONE]"),
    respond=lambda events: EventStream(events, ping_seconds=15),
)

# llama.cpp's server: `data:` events without a closing [DONE]
LLAMACPP_SSE = Framing(
    frame=sse_event,
    error=lambda error: error.body(),
    done=None,
    respond=lambda events: EventStream(events, ping_seconds=15),
)

OLLAMA_NDJSON = Framing(
    frame=ndjson_line,
    error=lambda error: {"error": error.message},
    done=None,
    respond=NDJSONStream,
)
