"""GET /health (the process is alive) and GET /ready (every model is loaded)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.handlers.common import registry


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    models = {m.id: m.state for m in registry(request).models}
    ok = all(state == "ready" for state in models.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "models": models},
        status_code=200 if ok else 503,
    )
