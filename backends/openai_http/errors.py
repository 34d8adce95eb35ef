"""The one place where upstream failures become `UpstreamError`s.

Upstream error bodies come in several dialects: OpenAI's envelope; llama.cpp's server
and vLLM, whose `code` is the HTTP status as an integer; vLLM's older flat
`{"object": "error", "message", "type", "code"}`; TGI's `{"error": "...",
"error_type"}`; FastAPI's `{"detail": ...}`; or plain text. Each becomes an OpenAI
envelope with a string code. An upstream 4xx keeps its status and message; a broken
upstream is a 502, a silent one a 504.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

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
MAX_MESSAGE = 2000


class RetryableError(UpstreamError):
    """Failed before the upstream produced anything: another replica may serve it."""


def from_response(status: int, body: bytes, headers: httpx.Headers) -> UpstreamError:
    """Map an upstream's non-2xx answer."""
    fields = _error_fields(body)
    message = str(fields.get("message") or "").strip()[:MAX_MESSAGE]
    if not message:
        message = f"The upstream server answered HTTP {status}."
    upstream_type = fields.get("type") if isinstance(fields.get("type"), str) else None
    code = fields.get("code")
    if not isinstance(code, str) or not code:
        code = CODE_BY_UPSTREAM_TYPE.get(upstream_type or "") or CODE_BY_STATUS.get(status)
    client_status = status if 400 <= status < 500 or status in (503, 504) else 502
    if client_status >= 500:
        error_type = "server_error"
        code = code or "upstream_error"
    elif upstream_type in OPENAI_TYPES:
        error_type = upstream_type
    else:
        error_type = TYPE_BY_STATUS.get(status, "invalid_request_error")
    param = fields.get("param") if isinstance(fields.get("param"), str) else None
    cls = RetryableError if status in RETRYABLE_STATUS else UpstreamError
    return cls(message, client_status, error_type, code, param, _retry_after(headers))


def from_stream_error(payload: Any) -> UpstreamError:
    """An `{"error": ...}` object inside an SSE stream (vLLM sends these mid-stream)."""
    fields = _fields_of(payload)
    status = fields.get("code") if isinstance(fields.get("code"), int) else 500
    return from_response(status, json.dumps(payload).encode(), httpx.Headers())


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
        return UpstreamError(
            f"The upstream server sent nothing for {chunk_timeout:g} seconds.",
            504, "server_error", "upstream_timeout",
        )
    return UpstreamError(
        "The connection to the upstream server failed.", 502, "server_error", "upstream_error"
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


def _error_fields(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return {"message": text} if text and len(text) < 500 and "<" not in text else {}
    return _fields_of(payload)


def _fields_of(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        return {"message": payload} if isinstance(payload, str) else {}
    error = payload.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):  # TGI
        return {"message": error, "type": payload.get("error_type")}
    if payload.get("object") == "error" or "message" in payload:  # vLLM's flat form
        return payload
    detail = payload.get("detail")  # FastAPI
    if isinstance(detail, str):
        return {"message": detail}
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        return {"message": str(detail[0].get("msg", "invalid request"))}
    return {}


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from inference servers
