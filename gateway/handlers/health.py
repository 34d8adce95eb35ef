"""GET /health (the process is alive) and GET /ready (every model is loaded and, for
backends with upstream replicas, has at least one healthy replica)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.handlers.common import registry
from gateway.middleware import is_authorized


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    models: dict[str, str] = {}
    replicas: dict[str, Any] = {}
    for m in registry(request).models:
        state: str = m.state
        if state == "ready":
            # Backends with remote replicas report them in stats(); a model whose every
            # replica is down cannot serve, so the gateway is not ready either.
            stats = m.backend.stats()
            if "replicas" in stats:
                replicas[m.id] = stats["replicas"]
            if stats.get("available") is False:
                state = "unavailable"
        models[m.id] = state
    ok = all(state == "ready" for state in models.values())
    body: dict[str, Any] = {"status": "ready" if ok else "not_ready", "models": models}
    if replicas:
        body["replicas"] = replicas
    if not is_authorized(request.scope):
        # With API keys set, a client without one learns only ready or not: models,
        # replicas, upstream URLs and errors are for key holders.
        body = {"status": body["status"]}
    return JSONResponse(body, status_code=200 if ok else 503)
