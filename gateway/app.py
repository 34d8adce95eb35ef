"""Build the ASGI application: routes, edge middleware and the lifespan that loads
and frees the models. All state lives in the app, none in module globals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import GatewayConfig
from gateway.drain import Drain
from gateway.edge import edge_middleware
from gateway.errors import APIError
from gateway.handlers.chat import create_chat_completion
from gateway.handlers.common import error_response
from gateway.handlers.completions import create_completion
from gateway.handlers.experiments import experiment_routes
from gateway.handlers.feedback import post_feedback
from gateway.handlers.health import health, ready
from gateway.handlers.llamacpp import llamacpp_routes
from gateway.handlers.metrics import backend_samples, metrics_endpoint
from gateway.handlers.models import get_model, list_backends, list_models
from gateway.handlers.ollama import ollama_routes
from gateway.handlers.openapi import openapi_json
from gateway.handlers.tokenize import detokenize, tokenize, tokenizer_info
from gateway.metrics import GatewayMetrics
from gateway.records.store import open_store
from gateway.records.writer import RecordWriter
from gateway.registry import ModelRegistry
from gateway.routing import Router
from gateway.routing.shadow import ShadowRunner

log = structlog.get_logger("gateway.app")


def _log_fatal(message: str) -> None:
    log.error("fatal", message=message)


def create_app(
    config: GatewayConfig,
    models: ModelRegistry | None = None,
    on_fatal: Callable[[str], None] = _log_fatal,
) -> Starlette:
    """`models` is built from `config` when not given. `on_fatal` is called when a model
    fails to load; the CLI uses it to stop the server with an error."""
    registry = models if models is not None else ModelRegistry.from_config(config)
    drain = Drain()  # the server ends requests through it at shutdown (gateway/server.py)
    router = Router(
        config.routes,
        [m.id for m in registry.models],
        hidden=[m.id for m in config.models if m.hidden],
    )
    metrics = GatewayMetrics(lambda: backend_samples(registry))
    records = (
        RecordWriter(open_store(config.store, config.base_dir), config.store, metrics.registry)
        if config.store is not None
        else None
    )
    shadows = ShadowRunner(
        lambda route, shadow, result: metrics.shadow.labels(route, shadow, result).inc(),
        lambda route, shadow, role, seconds: metrics.shadow_duration.labels(
            route, shadow, role
        ).observe(seconds),
        report=records.report_shadow if records is not None else None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        loader = asyncio.create_task(registry.load_all(on_fatal))
        if records is not None:
            records.start()
        try:
            yield {
                "registry": registry,
                "limits": config.limits,
                "drain": drain,
                "router": router,
                "metrics": metrics,
                "metrics_settings": config.metrics,
                "shadows": shadows,
                "records": records,
            }
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            await shadows.aclose()
            if records is not None:
                await records.aclose()
            await registry.aclose()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = {
            404: f"Unknown request URL: {request.method} {request.url.path}.",
            405: f"Method {request.method} is not allowed for {request.url.path}.",
        }.get(exc.status_code, str(exc.detail))
        headers = dict(exc.headers) if exc.headers else None  # 405 carries Allow
        return error_response(
            APIError(exc.status_code, message, "invalid_request_error", None, code, headers)
        )

    routes = [
        Route("/v1/completions", create_completion, methods=["POST"]),
        Route("/v1/chat/completions", create_chat_completion, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/v1/backends", list_backends, methods=["GET"]),
        *([Route("/v1/feedback", post_feedback, methods=["POST"])] if config.store else []),
        *(experiment_routes(config.report) if config.store else []),  # reports, page
        # the served model's tokenizer, at llama.cpp's and vLLM's paths and under /v1
        *(
            Route(f"{prefix}{path}", endpoint, methods=[method])
            for prefix in ("", "/v1")
            for path, endpoint, method in (
                ("/tokenize", tokenize, "POST"),
                ("/detokenize", detokenize, "POST"),
                ("/tokenizer_info", tokenizer_info, "GET"),
            )
        ),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        *([Route("/metrics", metrics_endpoint, methods=["GET"])] if config.metrics.enabled else []),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *llamacpp_routes(),  # llama.cpp's and Ollama's dialects, for editors
        *ollama_routes(),
    ]
    middleware = edge_middleware(config.server, drain)
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )
    app.state.drain = drain
    app.state.records = records  # the record writer (None without [store])
    return app
