"""Edge middleware, written as plain ASGI (Starlette's BaseHTTPMiddleware hides client
disconnects from the app, which is how peers end up generating for nobody)."""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError

log = structlog.get_logger("gateway.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class AccessRecord:
    """Filled in by handlers, written out as one access line by `RequestContext`."""

    model: str | None = None
    stream: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    error: str | None = None


def access_record(scope: Scope) -> AccessRecord:
    record = scope.setdefault("state", {}).get("access")
    if record is None:
        record = scope["state"]["access"] = AccessRecord()
    return record


async def send_error(send: Send, error: APIError, request_id: str | None = None) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for name, value in (error.headers or {}).items():
        headers.append((name.encode(), value.encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestContext:
    """Gives each request an id (the client's `x-request-id` if sane), binds it to every
    log line, returns it as `x-request-id`, and writes one access line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if REQUEST_ID.match(incoming) else f"req_{secrets.token_hex(12)}"
        scope.setdefault("state", {})["request_id"] = request_id
        record = access_record(scope)
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                fields = {k: v for k, v in asdict(record).items() if v is not None}
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status or 499,
                    total_ms=round((time.perf_counter() - started) * 1000, 1),
                    **fields,
                )


class BodyLimit:
    """Refuses request bodies over `max_bytes` with a 413 envelope, whether the size is
    announced in content-length or only discovered while reading a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = APIError(
            413,
            f"Request body too large: the limit is {self.max_bytes} bytes.",
            "invalid_request_error",
            None,
            "request_too_large",
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await send_error(send, too_big)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_big
            return message

        await self.app(scope, limited_receive, send)


class ApiKeyAuth:
    """When keys are configured, `/v1/*` needs `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and any(
            secrets.compare_digest(token.strip(), k) for k in self.keys
        ):
            await self.app(scope, receive, send)
            return
        await send_error(
            send,
            APIError(
                401,
                "Incorrect API key provided. Pass it as 'Authorization: Bearer <key>'.",
                "invalid_request_error",
                None,
                "invalid_api_key",
            ),
        )
