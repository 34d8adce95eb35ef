"""What keeps a web page the user happens to visit from using the gateway.

A browser lets any page send a "simple" cross-site request (a POST with a
`text/plain` body, no preflight) and lets DNS rebinding point an attacker's host name
at 127.0.0.1. Three plain-ASGI guards close that:

- `JsonContentType`: POSTs must say `Content-Type: application/json`, which no page
  can send cross-site without a CORS preflight (415 otherwise).
- `HostGuard`: a request that arrives on a loopback address must name a loopback host
  (`localhost`, `*.localhost`, `127.x.x.x`, `[::1]`), unless `allowed_hosts` says
  otherwise; a rebound name such as `evil.example` gets 403.
- `Cors`: off unless `cors_origins` lists origins; then preflights of listed origins
  get 204 with the allowed methods and headers, and their responses expose
  `x-request-id`.
"""

from __future__ import annotations

import ipaddress
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError
from gateway.middleware import send_error

# A page can send a cross-site POST without a preflight, never a PUT or PATCH; and the
# gateway routes no PUT or PATCH, so those reach the router and get their 405.
JSON_METHODS = frozenset({"POST"})
CORS_METHODS = "GET, POST"
DEFAULT_ALLOW_HEADERS = "authorization, content-type, x-request-id"
EXPOSE_HEADERS = b"x-request-id, retry-after"
MAX_AGE = b"600"
HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _shown(value: bytes | str, limit: int = 80) -> str:
    """A client-sent value, made safe to quote back in a message."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


class JsonContentType:
    """POST bodies must be declared `application/json` (parameters such
    as `; charset=utf-8` are fine); anything else is a 415 that says what to send."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in JSON_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-type")
        media_type = (declared or b"").split(b";", 1)[0].strip().lower()
        if media_type == b"application/json":
            await self.app(scope, receive, send)
            return
        got = f"'{_shown(declared)}'" if declared is not None else "no Content-Type"
        await send_error(
            send,
            APIError(
                415,
                f"Unsupported Content-Type: got {got}. Send the request body as JSON with the "
                "header 'Content-Type: application/json'.",
                "invalid_request_error",
                None,
                "unsupported_media_type",
            ),
        )


def split_host(host: str) -> str | None:
    """The host name or address of a `Host` header without its port, lower-cased;
    None when the header is malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[1:end], host[end + 1 :]
    else:
        name, sep, port = host.partition(":")
        rest = sep + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return None
    return name.rstrip(".") or None


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def host_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    for entry in allowed:
        if entry == "*" or entry == name:
            return True
        if entry.startswith("*.") and name.endswith(entry[1:]):
            return True
    return False


class HostGuard:
    """DNS-rebinding defence. Without `allowed_hosts`, a request that arrived on a
    loopback address must name a loopback host; with it, every request must name a
    loopback host or one of `allowed_hosts` (`"*"` turns the check off; `"*.example.com"`
    matches subdomains). Requests without a `Host` header pass (browsers always send
    one)."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] = ()) -> None:
        self.app = app
        self.allowed = tuple(h.lower().strip("[]").rstrip(".") for h in allowed_hosts)
        self.off = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.off:
            await self.app(scope, receive, send)
            return
        raw = _header(scope, b"host")
        if raw is None or self._accepts(scope, raw):
            await self.app(scope, receive, send)
            return
        hint = (
            "add it to server.allowed_hosts"
            if not self.allowed
            else f"it is not in server.allowed_hosts ({', '.join(self.allowed)})"
        )
        await send_error(
            send,
            APIError(
                403,
                f"Host '{_shown(raw)}' is not allowed: this gateway answers to loopback names "
                f"only; to serve it under this name, {hint}.",
                "invalid_request_error",
                None,
                "host_not_allowed",
            ),
        )

    def _accepts(self, scope: Scope, raw: bytes) -> bool:
        name = split_host(raw.decode("latin-1"))
        if name is None:
            return False
        if is_loopback_name(name):
            return True
        if self.allowed:
            return host_allowed(name, self.allowed)
        server = scope.get("server")
        return not (server and isinstance(server[0], str) and is_loopback_address(server[0]))


class Cors:
    """Cross-origin access for the origins in `cors_origins` (`"*"`: any origin, without
    credentials). With none configured, preflights are refused and no response carries
    CORS headers, so browsers keep pages of other origins out."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.origins = frozenset(o.lower().rstrip("/") for o in origins)
        self.any = "*" in self.origins

    def _allowed(self, origin: bytes) -> bool:
        return self.any or origin.decode("latin-1").lower() in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if scope["method"] == "OPTIONS" and origin is not None:
            method = _header(scope, b"access-control-request-method")
            if method is not None:
                await self._preflight(scope, send, origin, method)
                return
        if not self.origins:
            await self.app(scope, receive, send)
            return
        allowed = origin is not None and self._allowed(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"vary", b"Origin")]
                if allowed:
                    assert origin is not None
                    headers += [
                        (b"access-control-allow-origin", b"*" if self.any else origin),
                        (b"access-control-expose-headers", EXPOSE_HEADERS),
                    ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, send: Send, origin: bytes, method: bytes) -> None:
        vary = [(b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")]
        if not self.origins or not self._allowed(origin):
            reason = (
                "cross-origin requests are not enabled (server.cors_origins is empty)"
                if not self.origins
                else f"origin '{_shown(origin)}' is not in server.cors_origins"
            )
            error = APIError(403, f"CORS preflight refused: {reason}.", code="cors_not_allowed")
            await send_error(send, error, extra_headers=vary)
            return
        if method.decode("latin-1").upper() not in ("GET", "POST", "HEAD"):
            error = APIError(
                403,
                f"CORS preflight refused: method '{_shown(method)}' is not allowed "
                f"(allowed: {CORS_METHODS}).",
                code="cors_not_allowed",
            )
            await send_error(send, error, extra_headers=vary)
            return
        requested = (_header(scope, b"access-control-request-headers") or b"").decode("latin-1")
        allow_headers = requested if HEADER_LIST.match(requested) else DEFAULT_ALLOW_HEADERS
        headers = [
            (b"access-control-allow-origin", b"*" if self.any else origin),
            (b"access-control-allow-methods", CORS_METHODS.encode()),
            (b"access-control-allow-headers", allow_headers.encode()),
            (b"access-control-max-age", MAX_AGE),
            (b"content-length", b"0"),
            *vary,
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
