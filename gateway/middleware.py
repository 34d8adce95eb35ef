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
from gateway.records.build import build_record

log = structlog.get_logger("gateway.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PROTECTED_EXACT = frozenset({"/v1", "/tokenize", "/detokenize", "/tokenizer_info"})


@dataclass
class AccessRecord:
    """Filled in by handlers, written out as one access line by `RequestContext`."""

    model: str | None = None
    stream: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    queue_ms: float | None = None  # the longest wait of its sequences for a slot
    error: str | None = None
    cancelled: bool | None = None  # the client left first: logged with status 499
    # routing (gateway/routing): what served it and why; metrics read these too
    operation: str | None = None  # completion / chat
    route: str | None = None
    experiment: str | None = None
    variant: str | None = None
    assignment: str | None = None  # hash / override / unit_missing / request
    served_by: str | None = None
    fell_back: bool | None = None  # served by a fallback: keep it out of comparisons
    fallback_errors: str | None = None  # "model:code,..." of the candidates that failed
    unit_hash: str | None = None  # the experiment unit's hash (never its value): for records


def access_record(scope: Scope) -> AccessRecord:
    record = scope.setdefault("state", {}).get("access")
    if record is None:
        record = scope["state"]["access"] = AccessRecord()
    return record


def error_bytes(error: APIError) -> bytes:
    """The envelope as JSON, ASCII only, so that no text in it can fail to encode."""
    return json.dumps(error.body(), ensure_ascii=True).encode()


async def send_error(
    send: Send, error: APIError, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = error_bytes(error)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for name, value in (error.headers or {}).items():
        headers.append((name.encode(), value.encode()))
    headers.extend(extra_headers or ())
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def loggable(value: object, limit: int = 2000) -> object:
    """A log field that cannot break a log line: lone surrogates and control characters
    escaped, long text cut."""
    if not isinstance(value, str):
        return value
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    text = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[:limit] + "..."


INTERNAL_ERROR = APIError(
    500,
    "The server had an error while processing your request. Sorry about that!",
    "server_error",
    None,
    "internal_error",
)


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
            except Exception as exc:
                # Whatever failed below (a handler's error path, another middleware),
                # the client gets an envelope with its request id, never text/plain.
                record.error = record.error or "internal_error"
                if status:
                    raise  # half a response: the server must cut the connection
                log.error("request failed", exc_info=exc, error_type=type(exc).__name__)
                await send_with_id(_start(INTERNAL_ERROR))
                await send_with_id(
                    {"type": "http.response.body", "body": error_bytes(INTERNAL_ERROR)}
                )
            finally:
                self._log(scope, record, status, started)
                _observe(scope, record, status, started)
                _store(scope, record, status, started, request_id)

    @staticmethod
    def _log(scope: Scope, record: AccessRecord, status: int, started: float) -> None:
        try:
            fields = {k: loggable(v) for k, v in asdict(record).items() if v is not None}
            log.info(
                "request",
                method=loggable(scope["method"]),
                path=loggable(scope["path"]),
                status=499 if record.cancelled else (status or 499),
                total_ms=round((time.perf_counter() - started) * 1000, 1),
                **fields,
            )
        except Exception as exc:  # a log line must never take a response down with it
            log.error("access log line failed", error_type=type(exc).__name__)


def _observe(scope: Scope, record: AccessRecord, status: int, started: float) -> None:
    """Hands the finished request to the app's metrics (`GatewayMetrics.observe`)."""
    metrics = scope.get("state", {}).get("metrics")
    if metrics is None:
        return
    try:
        status = 499 if record.cancelled else (status or 499)
        metrics.observe(record, status, time.perf_counter() - started)
    except Exception as exc:  # like the log line: never at the cost of a response
        log.error("metrics observation failed", error_type=type(exc).__name__)


def _store(
    scope: Scope, record: AccessRecord, status: int, started: float, request_id: str
) -> None:
    """Offers the finished request's experiment record to the app's record writer (a
    bounded queue: never waits; gateway/records/writer.py)."""
    writer = scope.get("state", {}).get("records")
    if writer is None:
        return
    try:
        seconds = time.perf_counter() - started
        built = build_record(
            record,
            request_id=request_id,
            status=499 if record.cancelled else (status or 499),
            started_at=time.time() - seconds,
            seconds=seconds,
            record_all=writer.settings.record_all,
        )
        if built is not None:
            writer.offer(built)
    except Exception as exc:  # like the log line: never at the cost of a response
        log.error("experiment record failed", error_type=type(exc).__name__)


def _start(error: APIError) -> Message:
    body = error_bytes(error)
    return {
        "type": "http.response.start",
        "status": error.status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }


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


def is_authorized(scope: Scope) -> bool:
    """Whether the request carried a valid API key, or none is needed (set by
    `ApiKeyAuth`; False if that middleware did not run)."""
    return bool(scope.get("state", {}).get("authorized", False))


def is_protected(path: str) -> bool:
    return path.startswith("/v1/") or path in PROTECTED_EXACT


class ApiKeyAuth:
    """When keys are configured, `/v1/*`, `/tokenize` and `/detokenize` need
    `Authorization: Bearer <key>`. Every request is marked authorized or not, for the
    endpoints that show more to a client with a key (`/ready`)."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys)

    def _valid(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and any(
            secrets.compare_digest(token.strip(), k) for k in self.keys
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorized = not self.keys or self._valid(scope)
        scope.setdefault("state", {})["authorized"] = authorized
        if authorized or not is_protected(scope["path"]):
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
