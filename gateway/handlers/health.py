"""GET /health (the process is alive) and GET /ready (every model is loaded and its
backend says it can serve: its engine is alive, or, for backends with upstream
replicas, at least one replica is healthy)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import model_not_found
from gateway.handlers.common import error_response, registry
from gateway.middleware import is_authorized
from gateway.routing import Router


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    wanted = request.query_params.get("model")
    if wanted is not None:
        return _ready_for(request, wanted)
    models: dict[str, str] = {}
    replicas: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for m in registry(request).models:
        # The backend's own health decides past loading: an engine that died is
        # `failed`, a remote model with no healthy replica `unavailable`.
        state = m.current_state()
        models[m.id] = state
        if m.error:
            errors[m.id] = m.error
        if state not in ("loading", "failed"):
            stats = m.backend.stats()
            if "replicas" in stats:
                replicas[m.id] = stats["replicas"]
    ok = all(state == "ready" for state in models.values())
    body: dict[str, Any] = {"status": "ready" if ok else "not_ready", "models": models}
    if errors:
        body["errors"] = errors
    if replicas:
        body["replicas"] = replicas
    if not is_authorized(request.scope):
        # With API keys set, a client without one learns only ready or not: models,
        # replicas, upstream URLs and errors are for key holders.
        body = {"status": body["status"]}
    return JSONResponse(body, status_code=200 if ok else 503)


def _ready_for(request: Request, name: str) -> Response:
    """`/ready?model=ID`: one model, or one route, ready when any of its candidates is
    (so one dead upstream does not take the whole gateway out of a load balancer)."""
    router: Router = request.state.router
    known = {m.id: m for m in registry(request).models}
    if name not in known and name not in router.routes:
        return error_response(model_not_found(name))
    states = {c: known[c].current_state() for c in router.serving_models(name)}
    ok = any(state == "ready" for state in states.values())
    body: dict[str, Any] = {"status": "ready" if ok else "not_ready", "model": name}
    if is_authorized(request.scope):
        body["models"] = states
    return JSONResponse(body, status_code=200 if ok else 503)
