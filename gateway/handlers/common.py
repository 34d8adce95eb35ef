"""What every endpoint shares: the error boundary and access to app state."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import APIError, to_api_error
from gateway.generation import ClientDisconnected
from gateway.limits import LimitsSettings
from gateway.middleware import access_record
from gateway.openai.params import Body, parse_json_body, parse_off_loop
from gateway.registry import ModelRegistry

log = structlog.get_logger("gateway.handlers")
Endpoint = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


def registry(request: Request) -> ModelRegistry:
    return request.state.registry


def request_limits(request: Request) -> LimitsSettings:
    """The `[limits]` of the configuration (handed to requests by the lifespan)."""
    return request.state.limits


async def read_call(request: Request, parse: Callable[[Body, LimitsSettings], T]) -> T:
    """Read the JSON body and parse it into a call. A body with very many values is
    read and checked in a worker thread, so that it cannot stall the event loop."""
    raw = await request.body()
    limits = request_limits(request)
    if not parse_off_loop(raw):
        return parse(parse_json_body(raw), limits)
    return await asyncio.to_thread(lambda: parse(parse_json_body(raw, interleaved=True), limits))


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def api_endpoint(handler: Endpoint) -> Endpoint:
    """Every failure becomes an OpenAI error envelope; unexpected ones are logged with
    their traceback here and reach the client as a generic 500."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientDisconnected:
            access_record(request.scope).error = "client_disconnected"
            return Response(status_code=499)
        except Exception as exc:
            error = to_api_error(exc)
            if error.status >= 500 and not isinstance(exc, APIError):
                log.error("request failed", exc_info=exc, error_type=type(exc).__name__)
            access_record(request.scope).error = error.code or error.type
            return error_response(error)

    return wrapper
