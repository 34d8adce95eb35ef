"""Graceful shutdown, the application's half: what happens to requests in flight when
the server's grace period is over.

The server (gateway/server.py) stops accepting connections at the first SIGTERM or
SIGINT and waits up to `shutdown_grace_seconds` for requests in flight. If some are
still running then, it calls `Drain.expire()`:

- a request whose response has not started (a non-streaming completion, or a stream
  still waiting for its first token) is cancelled by `DrainGuard` and answered with a
  503 envelope, code `server_shutting_down`;
- a stream already sending ends with an SSE `error` event of that code
  (gateway/sse.py listens through `Drain.on_expire`).

Either way the access line says `error=server_shutting_down`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError
from gateway.middleware import access_record, send_error

log = structlog.get_logger("gateway.drain")
SHUTTING_DOWN = "server_shutting_down"


def shutting_down_error() -> APIError:
    return APIError(
        503,
        "The server is shutting down and could not finish this request in its grace "
        "period; retry it.",
        "server_error",
        None,
        SHUTTING_DOWN,
        {"retry-after": "1"},
    )


@dataclass(eq=False)
class _InFlight:
    task: asyncio.Task[object]
    started: bool = False
    cut: bool = False


class Drain:
    """Shared by the server and the app (one per app, no global state)."""

    def __init__(self) -> None:
        self.draining = False
        self.expired = False
        self._in_flight: set[_InFlight] = set()
        self._listeners: set[Callable[[], None]] = set()

    def begin(self) -> None:
        self.draining = True

    def on_expire(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when the grace period ends (now, if it has); returns the
        function that unregisters it. Callbacks, not an event, so that no loop is bound."""
        if self.expired:
            callback()
        self._listeners.add(callback)
        return lambda: self._listeners.discard(callback)

    def expire(self) -> int:
        """End the grace period: cut every request whose response has not started and
        tell the streams. Returns how many requests were cut before responding."""
        self.draining = True
        self.expired = True
        for callback in list(self._listeners):
            callback()
        cut = 0
        for entry in list(self._in_flight):
            if not entry.started and not entry.task.done():
                entry.cut = True
                entry.task.cancel(SHUTTING_DOWN)
                cut += 1
        return cut


class DrainGuard:
    """Answers a request cut by `Drain.expire()` before its response started with a
    503 envelope instead of letting the cancellation reach the server."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await self.app(scope, receive, send)
            return
        entry = _InFlight(task)

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.started = True
            await send(message)

        self.drain._in_flight.add(entry)
        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not entry.cut or entry.started:
                raise
            task.uncancel()
            error = shutting_down_error()
            access_record(scope).error = SHUTTING_DOWN
            await send_error(send, error, [(b"connection", b"close")])
        finally:
            self.drain._in_flight.discard(entry)
