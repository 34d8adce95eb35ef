"""The experiment report over HTTP (served only with a `[store]`):

- `GET /v1/experiments`: every experiment of the config or the store, its variants and
  request counts;
- `GET /v1/experiments/{name}/report?since=...`: the report as JSON (gateway/report/);
- `GET /experiments/{name}`: the page that draws it, and its script and style.

The /v1 paths need the API key like every /v1 path. The page's HTML holds no data: its
script fetches the JSON with the key as a bearer header (see gateway/report/page.py), so
the page itself is served to anyone; with a valid key (or none configured) an unknown
experiment is a 404 there too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.errors import APIError, invalid
from gateway.handlers.common import api_endpoint, error_response
from gateway.middleware import is_authorized
from gateway.records.model import RecordStore
from gateway.report.build import ReportSettings
from gateway.report.page import ASSET_PREFIX, HEADERS, asset, shell
from gateway.report.service import (
    compute,
    configured,
    list_experiments,
    load_experiment,
    parse_since,
)
from gateway.routing.config import RouteConfig

log = structlog.get_logger("gateway.experiments")
STORE_TIMEOUT = 30.0  # seconds for reading an experiment's records
T = TypeVar("T")


def experiment_routes(settings: ReportSettings) -> list[Route]:
    @api_endpoint
    async def experiments(request: Request) -> Response:
        data = await _read(list_experiments(_store(request), _routes(request)))
        return JSONResponse({"object": "list", "data": data})

    @api_endpoint
    async def report(request: Request) -> Response:
        name = request.path_params["name"]
        unknown = set(request.query_params) - {"since"}
        if unknown:
            param = sorted(unknown)[0]
            raise invalid(f"Unknown query parameter '{param}' (expected since).", param)
        try:
            since = parse_since(request.query_params.get("since"))
        except ValueError as exc:
            raise invalid(str(exc), "since") from None
        loaded = await _read(load_experiment(_store(request), _routes(request), name, since))
        if loaded is None:
            raise _not_found(name)
        # the bootstrap is CPU work: off the event loop, which keeps serving meanwhile
        return JSONResponse(await asyncio.to_thread(compute, loaded, settings, since))

    @api_endpoint
    async def page(request: Request) -> Response:
        name = request.path_params["name"]
        if is_authorized(request.scope) and name not in configured(_routes(request)):
            stored = await _read(_store(request).experiments())
            if all(s.name != name for s in stored):
                response = error_response(_not_found(name))
                response.headers.update(HEADERS)
                return response
        return HTMLResponse(shell(name), headers={**HEADERS, "cache-control": "no-store"})

    async def static(request: Request) -> Response:
        found = asset(request.path_params["file"])
        if found is None:
            return error_response(
                APIError(404, "No such asset.", "invalid_request_error", None, "not_found")
            )
        data, media_type = found
        return Response(
            data,
            media_type=media_type,
            headers={**HEADERS, "cache-control": "public, max-age=300"},
        )

    return [
        Route("/v1/experiments", experiments, methods=["GET"]),
        Route("/v1/experiments/{name}/report", report, methods=["GET"]),
        Route(ASSET_PREFIX + "{file}", static, methods=["GET"]),
        Route("/experiments/{name}", page, methods=["GET"]),
    ]


def _store(request: Request) -> RecordStore:
    return request.state.records.store


def _routes(request: Request) -> dict[str, RouteConfig]:
    return request.state.router.routes


async def _read(work: Awaitable[T]) -> T:
    """A store read within STORE_TIMEOUT; a store that fails is a 503, never a 500."""
    try:
        async with asyncio.timeout(STORE_TIMEOUT):
            return await work
    except Exception as exc:
        log.warning("experiment report not read", error_type=type(exc).__name__)
        raise APIError(
            503,
            "The record store is unavailable; retry later.",
            "server_error",
            None,
            "store_unavailable",
            {"retry-after": "5"},
        ) from None


def _not_found(name: str) -> APIError:
    return APIError(
        404,
        f"No experiment is named '{name}' (none configured or recorded).",
        "invalid_request_error",
        "name",
        "experiment_not_found",
    )
