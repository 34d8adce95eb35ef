"""The edge middleware stack, outermost first, as `create_app` installs it."""

from __future__ import annotations

from starlette.middleware import Middleware

from gateway.browser import Cors, HostGuard, JsonContentType
from gateway.config import ServerSettings
from gateway.drain import Drain, DrainGuard
from gateway.middleware import ApiKeyAuth, BodyLimit, RequestContext


def edge_middleware(settings: ServerSettings, drain: Drain) -> list[Middleware]:
    """Request id and access line first (so every answer below carries both), then
    the shutdown guard, the browser guards (Host, CORS preflight before any key is
    asked for), API keys, the JSON content type, and the body size."""
    return [
        Middleware(RequestContext),
        Middleware(DrainGuard, drain=drain),
        Middleware(HostGuard, allowed_hosts=settings.allowed_hosts),
        Middleware(Cors, origins=settings.cors_origins),
        Middleware(ApiKeyAuth, keys=settings.api_keys),
        Middleware(JsonContentType),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
    ]
