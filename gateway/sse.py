"""The streaming response: Server-Sent Events, framed by the caller, sent as they come.

Beside the events it keeps the connection alive with a `: ping` comment now and then,
stops the generator when the client leaves (closing it frees the engine's slots), and
when the server's shutdown grace period ends it stops the generator and ends the
stream with an SSE `error` event (`server_shutting_down`) instead of cutting it.

This replaces sse-starlette's EventSourceResponse, which watches uvicorn's exit flag
itself and cancels every stream at the first signal, with no error event and no grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.drain import SHUTTING_DOWN, Drain, shutting_down_error
from gateway.middleware import access_record

log = structlog.get_logger("gateway.sse")
PING = b": ping\n\n"


def error_event(body: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], ping_seconds: float = 15) -> None:
        self.events = events
        self.ping_seconds = ping_seconds
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-store", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lock = asyncio.Lock()
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        ended = asyncio.Event()
        drain: Drain | None = scope.get("state", {}).get("drain")
        unregister = drain.on_expire(ended.set) if drain is not None else None
        pump = asyncio.create_task(self._pump(send, lock))
        disconnect = asyncio.create_task(_wait_disconnect(receive))
        shutdown = asyncio.create_task(ended.wait())
        helpers = [disconnect, shutdown]
        if self.ping_seconds > 0:
            helpers.append(asyncio.create_task(self._ping(send, lock)))
        try:
            await asyncio.wait([pump, disconnect, shutdown], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if unregister is not None:
                unregister()
            for task in helpers:
                task.cancel()
            if not pump.done():
                pump.cancel()
            await asyncio.gather(pump, *helpers, return_exceptions=True)
        if not pump.cancelled():
            pump.result()  # the stream ended by itself (or failed: let it propagate)
            return
        if disconnect.done() and not disconnect.cancelled():
            return
        # The grace period is over: the generator is closed; say why the stream ends.
        access_record(scope).error = SHUTTING_DOWN
        async with lock:
            await send(
                {
                    "type": "http.response.body",
                    "body": self.shutdown_event(),
                    "more_body": True,
                }
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def shutdown_event(self) -> bytes:
        """The last event of a stream cut at the end of the shutdown grace period."""
        return error_event(shutting_down_error().body())

    async def _pump(self, send: Send, lock: asyncio.Lock) -> None:
        async with contextlib.aclosing(self.events) as events:
            async for chunk in events:
                async with lock:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        async with lock:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _ping(self, send: Send, lock: asyncio.Lock) -> None:
        while True:
            await asyncio.sleep(self.ping_seconds)
            async with lock:
                await send({"type": "http.response.body", "body": PING, "more_body": True})


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
