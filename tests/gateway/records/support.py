"""Records for store tests, and an app with a route and a [store] over scripted backends."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.config import GatewayConfig, ModelConfig, ServerSettings
from gateway.records import RequestRecord
from gateway.records.config import StoreSettings
from gateway.registry import ModelRegistry, ServedModel
from gateway.routing import RouteConfig
from tests.support.inprocess import ScriptedBackend


def record(request_id: str, **kw: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "time": 1_000.0,
        "request_id": request_id,
        "route": "smol",
        "experiment": "exp",
        "variant": "control",
        "served_by": "local",
        "fell_back": False,
        "unit_hash": "ab" * 32,
        "unit_missing": False,
        "operation": "completion",
        "stream": False,
        "status": 200,
        "error_type": None,
        "cancelled": False,
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "ttft_ms": 12.5,
        "total_ms": 40.0,
        "tokens_per_second": 100.0,
        "shadow": None,
    }
    values.update(kw)
    return RequestRecord(**values)


def stored_app(
    backends: Sequence[ScriptedBackend],
    routes: Sequence[RouteConfig],
    store: StoreSettings | None,
    hidden: Sequence[str] = (),
    settings: ServerSettings | None = None,
) -> Any:
    models = ModelRegistry([ServedModel(b.model_id, b, state="ready") for b in backends])
    config = GatewayConfig(
        settings or ServerSettings(),
        tuple(ModelConfig(b.model_id, "scripted", {}, b.model_id in hidden) for b in backends),
        Path("inline.toml"),
        routes=tuple(routes),
        store=store,
    )
    return create_app(config, models)
