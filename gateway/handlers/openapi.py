"""GET /openapi.json: the gateway's own API, limited to the routes this app serves."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.openapi import document

_CONVERTER = re.compile(r"\{(\w+):\w+\}")


def served_paths(routes: list[object]) -> list[str]:
    """Route paths in OpenAPI's spelling (`{model_id:path}` -> `{model_id}`)."""
    return [_CONVERTER.sub(r"{\1}", r.path) for r in routes if isinstance(r, Route)]


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document(served_paths(request.app.routes)))
