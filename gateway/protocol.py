"""uvicorn's httptools protocol with the limits a server on an open port needs.

uvicorn by itself accepts a request head of any size (httptools buffers it whole), never
times out a connection that is silent or stuck mid-head, and keeps every connection
it accepts until descriptors run out. `EdgeProtocol` adds, per connection:

- `max_header_bytes`: a request head (request line and headers) over it gets 431 and
  the connection is closed; counted as bytes arrive, so memory stays bounded;
- `header_timeout`: a connection that has not sent a complete head this long after it
  opened (or after the first byte of its next request) is closed;
- `body_timeout`: a request body still incomplete this long after its head is cut;
- `max_connections`: past it, a new connection evicts the connection that has been
  idle longest (no request in progress: silent, mid-head, or between requests); if every
  connection is busy, the new one gets 503 and is closed.

Idle keep-alive connections are closed by uvicorn's own `timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field

import httptools
import structlog
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.errors import APIError

log = structlog.get_logger("gateway.edge")
LINGER_SECONDS = 2.0  # after an answer outside a request: how long to drain input,
LINGER_BYTES = 1 << 20  # and how much of it


@dataclass(frozen=True)
class EdgeLimits:
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1024


@dataclass(eq=False)
class EdgeState:
    """Shared by the connections of one server: its limits and, oldest first, the
    connections with no request in progress (the ones that may be evicted)."""

    limits: EdgeLimits
    idle: dict[EdgeProtocol, None] = field(default_factory=dict)


class _HeadTooLarge(Exception):
    pass


def protocol_class(limits: EdgeLimits) -> type[EdgeProtocol]:
    """A protocol class bound to one server's limits, for `uvicorn.Config(http=...)`."""
    return type("GatewayHttpProtocol", (EdgeProtocol,), {"edge": EdgeState(limits)})


def _response(error: APIError) -> bytes:
    body = json.dumps(error.body()).encode()
    head = [
        STATUS_LINE[error.status],
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"x-request-id: req_" + secrets.token_hex(12).encode() + b"\r\n",
        *(f"{k}: {v}\r\n".encode() for k, v in (error.headers or {}).items()),
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class EdgeProtocol(HttpToolsProtocol):
    edge: EdgeState  # set on the subclass that `protocol_class` makes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True
        self._head_bytes = 0
        self._discarding = False
        self._discarded = 0
        self._timer: asyncio.TimerHandle | None = None
        self._arm(self.edge.limits.header_timeout, "header")
        idle = self.edge.idle
        if len(self.connections) > self.edge.limits.max_connections and not self._evict():
            log.warning(
                "connection refused: every connection is busy",
                client=_addr(self.client),
                max_connections=self.edge.limits.max_connections,
            )
            self._reject(
                APIError(
                    503,
                    "The server is at its connection limit; retry shortly.",
                    "server_error",
                    None,
                    "too_many_connections",
                    {"retry-after": "1"},
                )
            )
            return
        idle[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.edge.idle.pop(self, None)
        super().connection_lost(exc)

    def _evict(self) -> bool:
        idle = self.edge.idle
        while idle:
            victim = next(iter(idle))
            del idle[victim]
            if not victim.transport.is_closing():
                log.debug("connection evicted", client=_addr(victim.client))
                victim._disarm()
                victim.transport.close()
                return True
        return False

    # -- timers --------------------------------------------------------------------

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out, what)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, what: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if what == "header" and self.cycle is not None and not self.cycle.response_complete:
            # a pipelined head arriving while a response is sent: look again later
            self._arm(self.edge.limits.header_timeout, what)
            return
        if what == "body":
            if self.cycle is not None and not self.cycle.response_started:
                # The handler waiting for the rest of the body sees a disconnect.
                log.info("request body timeout: connection closed", client=_addr(self.client))
                self.transport.close()
            return
        log.info("request head timeout: connection closed", client=_addr(self.client))
        if what == "header" and self._head_bytes:
            self._reject(
                APIError(
                    408,
                    "The request head was not complete within "
                    f"{self.edge.limits.header_timeout:g} seconds.",
                    "invalid_request_error",
                    None,
                    "request_timeout",
                )
            )
            return
        self.transport.close()

    # -- head size -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except _HeadTooLarge:
            self._head_too_large()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._head_too_large()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and self._head_bytes > self.edge.limits.max_header_bytes:
            self._head_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:
            self._arm(self.edge.limits.header_timeout, "header")

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.edge.limits.max_header_bytes:
            raise _HeadTooLarge
        self._in_head = False
        self._head_bytes = 0
        self.edge.idle.pop(self, None)
        self._arm(self.edge.limits.body_timeout, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.edge.idle[self] = None

    def _head_too_large(self) -> None:
        limit = self.edge.limits.max_header_bytes
        log.warning("request head too large", client=_addr(self.client), limit=limit)
        self._reject(
            APIError(
                431,
                f"Request header fields too large: the limit is {limit} bytes for the request "
                "line and headers together.",
                "invalid_request_error",
                None,
                "request_header_fields_too_large",
            )
        )

    def _reject(self, error: APIError) -> None:
        """Answer outside any request (no app involved) and close. Closing a socket
        with unread input makes the kernel send a reset, which can destroy the answer
        before the client reads it: so half-close, discard what still arrives, and
        close when the client does, after LINGER_SECONDS or after LINGER_BYTES."""
        self._disarm()
        self.edge.idle.pop(self, None)
        self._discarding = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is being sent: no room for another
            return
        self.transport.write(_response(error))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)


def _addr(client: tuple[str, int] | None) -> str | None:
    return f"{client[0]}:{client[1]}" if client else None
