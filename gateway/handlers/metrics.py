"""GET /metrics: the app's Prometheus registry in the text exposition format. With API
keys configured it needs one too, unless `[metrics] require_api_key = false` (for a
scraper on a trusted network)."""

from __future__ import annotations

from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import APIError
from gateway.handlers.common import error_response
from gateway.metrics import CONTENT_TYPE, BackendSample, GatewayMetrics
from gateway.metrics_config import MetricsSettings
from gateway.middleware import is_authorized
from gateway.registry import ModelRegistry


async def metrics_endpoint(request: Request) -> Response:
    settings: MetricsSettings = request.state.metrics_settings
    if settings.require_api_key and not is_authorized(request.scope):
        return error_response(
            APIError(
                401,
                "Incorrect API key provided. Pass it as 'Authorization: Bearer <key>'.",
                "invalid_request_error",
                None,
                "invalid_api_key",
            )
        )
    metrics: GatewayMetrics = request.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)


def backend_samples(registry: ModelRegistry) -> Iterator[BackendSample]:
    """Each model's state for the scrape: up when it can serve now; busy slots and
    queue depth from its live stats, when the backend reports them."""
    for model in registry.models:
        state = model.current_state()
        stats = model.backend.stats() if state not in ("loading", "failed") else {}
        busy, queued = stats.get("busy"), stats.get("queued")
        yield BackendSample(
            model.id,
            state == "ready",
            busy if isinstance(busy, int) else None,
            queued if isinstance(queued, int) else None,
        )
