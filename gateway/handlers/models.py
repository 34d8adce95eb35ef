"""GET /v1/models, GET /v1/models/{id}, GET /v1/backends."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from backends.base import Backend
from backends.worker import ProcessBackend
from gateway.errors import model_not_found
from gateway.handlers.common import api_endpoint, registry
from gateway.registry import ServedModel
from gateway.routing import Router


def _model_json(model: ServedModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": "gateway"}


def _public_models(request: Request) -> list[dict[str, Any]]:
    """What clients may name: visible models, then routes (hidden models are served
    only through routes, so they are neither listed nor addressable)."""
    router: Router = request.state.router
    by_id = {m.id: m for m in registry(request).models}
    out = []
    for name in router.public_ids:
        model = by_id[router.first_model(name)]
        out.append({**_model_json(model), "id": name})
    return out


@api_endpoint
async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": _public_models(request)})


@api_endpoint
async def get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    for model in _public_models(request):
        if model["id"] == model_id:
            return JSONResponse(model)
    raise model_not_found(model_id)


@api_endpoint
async def list_backends(request: Request) -> Response:
    """The state of every configured model and its backend (not an OpenAI endpoint)."""
    data = []
    for model in registry(request).models:
        info = model.backend.info() if model.state == "ready" else None
        data.append(
            {
                "model": model.id,
                "backend": model.backend.name,
                "state": model.current_state(),  # "unavailable" while it cannot serve
                "error": model.error,
                "details": dict(info.details) if info else {},
                "stats": dict(model.backend.stats()) if info else {},
                **_isolation(model.backend),
            }
        )
    return JSONResponse({"object": "list", "data": data})


def _isolation(backend: Backend) -> dict[str, object]:
    """Where the model runs; for a worker process, its pid, state, restarts, last exit
    (`SIGSEGV`, `exit 1`) and the next restart attempt (Unix time)."""
    if isinstance(backend, ProcessBackend):
        return {"isolation": "process", "worker": backend.worker_status()}
    return {"isolation": "none", "worker": None}
