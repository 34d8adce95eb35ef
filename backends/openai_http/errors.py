"""The one place where upstream failures become `UpstreamError`s.

An upstream error body reaches the client only through the message of an OpenAI error
object: OpenAI's envelope `{"error": {"message", "type", "param", "code"}}` (also as
llama.cpp's server and vLLM send it, with the HTTP status as an integer `code`) or
vLLM's older unwrapped `{"object": "error", "message", ...}`. The message is cut to
`MAX_MESSAGE` characters; a code or param that does not look like one is dropped.
Anything else (plain text, HTML, TGI's or FastAPI's JSON) may carry a traceback or a
secret: the client gets a generic message and the body goes to the log only.
An upstream 4xx keeps its status; a broken upstream is a 502, a silent one a 504.
`Retry-After` is parsed defensively and clamped to 1..3600 seconds.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog

from backends.errors import UpstreamError

OPENAI_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "server_error",
}
TYPE_BY_STATUS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
CODE_BY_STATUS = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    413: "request_too_large",
    422: "invalid_request",
    429: "rate_limit_exceeded",
    503: "upstream_unavailable",
    504: "upstream_timeout",
}
# error types that upstream engines use for what OpenAI has a code for
CODE_BY_UPSTREAM_TYPE = {
    "exceed_context_size_error": "context_length_exceeded",  # llama.cpp server
}
RETRYABLE_STATUS = {502, 503, 504}
MAX_MESSAGE = 1000  # characters of an upstream's message shown to the client
MAX_LOGGED_BODY = 2000  # characters of a foreign error body written to the log
RETRY_AFTER_RANGE = (1.0, 3600.0)
TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # what a code (or param) looks like

log = structlog.get_logger("backends.openai_http")


class RetryableError(UpstreamError):
    """Failed before the upstream produced anything: another replica may serve it."""


def from_response(
    status: int, body: bytes, headers: httpx.Headers, upstream: str | None = None
) -> UpstreamError:
    """Map an upstream's non-2xx answer (`body`: at most a prefix of it)."""
    fields = openai_error(_parse(body))
    if fields is None:
        if body.strip():
            log.warning("upstream error body is not an OpenAI error", status=status,
                        upstream=upstream, body=excerpt(body))
            message = (f"The upstream server answered {status} with a body that is not an "
                       "OpenAI error.")
        else:
            message = f"The upstream server answered {status} without an error message."
        fields = {}
    else:
        message = clean_message(fields.get("message"))
    upstream_type = fields.get("type") if isinstance(fields.get("type"), str) else None
    code = fields.get("code")
    if not isinstance(code, str) or not TOKEN.fullmatch(code):
        code = CODE_BY_UPSTREAM_TYPE.get(upstream_type or "") or CODE_BY_STATUS.get(status)
    client_status = status if 400 <= status < 500 or status in (503, 504) else 502
    if client_status >= 500:
        error_type = "server_error"
        code = code or "upstream_error"
    elif upstream_type in OPENAI_TYPES:
        error_type = upstream_type
    else:
        error_type = TYPE_BY_STATUS.get(status, "invalid_request_error")
    param = fields.get("param")
    if not isinstance(param, str) or len(param) > 128 or not param.isprintable():
        param = None
    cls = RetryableError if status in RETRYABLE_STATUS else UpstreamError
    retry_after = parse_retry_after(headers.get("retry-after"))
    return cls(message, client_status, error_type, code, param, retry_after)


def from_stream_error(payload: dict[str, Any]) -> UpstreamError:
    """An `{"error": ...}` object inside an SSE stream (vLLM sends these mid-stream)."""
    fields = openai_error(payload) or {}
    code = fields.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) else 500
    if not 400 <= status < 600:
        status = 500
    return from_response(status, json.dumps(payload).encode(), httpx.Headers())


def openai_error(payload: Any) -> dict[str, Any] | None:
    """The error object of an OpenAI-shaped error body with a string message, or None."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error
    if payload.get("object") == "error" and isinstance(payload.get("message"), str):
        return payload  # vLLM's unwrapped form
    return None


def clean_message(message: str) -> str:
    """What of an upstream's own error message the client sees: stripped, valid UTF-8,
    at most MAX_MESSAGE characters."""
    text = message.strip().encode("utf-8", "replace").decode()
    if not text:
        return "The upstream server answered with an error and no message."
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def excerpt(body: bytes) -> str:
    """A foreign body for the log: decoded leniently and cut."""
    text = body[: MAX_LOGGED_BODY * 4].decode("utf-8", "replace")
    return text if len(text) <= MAX_LOGGED_BODY else text[:MAX_LOGGED_BODY] + "…"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delay-seconds or an HTTP date), clamped to
    RETRY_AFTER_RANGE; None when absent or meaningless (`nan`, junk)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    low, high = RETRY_AFTER_RANGE
    return min(high, max(low, seconds))


def from_transport(exc: httpx.TransportError, chunk_timeout: float) -> UpstreamError:
    """A failure before the upstream's status line arrived."""
    if isinstance(exc, httpx.PoolTimeout):
        return UpstreamError(
            "Too many requests in flight to the upstream servers; retry shortly.",
            503, "server_error", "upstream_busy", retry_after=1,
        )
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        return RetryableError(
            "Could not connect to the upstream server.", 502, "server_error", "upstream_unreachable"
        )
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        # closed before any byte of an answer (a crash, or an idle keep-alive dropped)
        return RetryableError(
            "The upstream server closed the connection before answering.",
            502, "server_error", "upstream_disconnected",
        )
    if isinstance(exc, httpx.TimeoutException):
        return idle_timeout(chunk_timeout)
    return UpstreamError(
        "The connection to the upstream server failed.", 502, "server_error", "upstream_error"
    )


def idle_timeout(seconds: float) -> UpstreamError:
    return UpstreamError(
        f"The upstream server sent no data for {seconds:g} seconds.",
        504, "server_error", "upstream_timeout",
    )


def total_timeout(seconds: float) -> UpstreamError:
    return UpstreamError(
        f"The upstream server did not finish within {seconds:g} seconds.",
        504, "server_error", "upstream_timeout",
    )


def malformed(what: str) -> UpstreamError:
    return UpstreamError(
        f"The upstream server sent a malformed response ({what}).",
        502, "server_error", "upstream_bad_response",
    )


def ended_early() -> UpstreamError:
    return UpstreamError(
        "The upstream server closed the stream before the generation finished.",
        502, "server_error", "upstream_disconnected",
    )


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
