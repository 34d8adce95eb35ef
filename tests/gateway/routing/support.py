"""An app with routes over scripted backends, and a /metrics reader."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import GatewayConfig, ModelConfig, ServerSettings
from gateway.metrics_config import MetricsSettings
from gateway.registry import ModelRegistry, ServedModel
from gateway.routing import Experiment, RouteConfig, Shadow, Variant
from tests.support.inprocess import ScriptedBackend


def routed_app(
    backends: Sequence[ScriptedBackend],
    routes: Sequence[RouteConfig],
    hidden: Sequence[str] = (),
    settings: ServerSettings | None = None,
    metrics: MetricsSettings | None = None,
) -> Any:
    models = ModelRegistry([ServedModel(b.model_id, b, state="ready") for b in backends])
    config = GatewayConfig(
        settings or ServerSettings(),
        tuple(ModelConfig(b.model_id, "scripted", {}, b.model_id in hidden) for b in backends),
        Path("inline.toml"),
        routes=tuple(routes),
        metrics=metrics or MetricsSettings(),
    )
    return create_app(config, models)


def ab_route(
    fallbacks: tuple[str, ...] = ("spare",),
    shadow: Shadow | None = None,
    deadline: float = 600.0,
    allow_override: bool = True,
) -> RouteConfig:
    experiment = Experiment(
        "local-vs-remote",
        "user",
        "2026-12",
        (Variant("control", "local", 50), Variant("treatment", "remote", 50)),
        allow_override,
    )
    return RouteConfig(
        "smol", experiment=experiment, fallbacks=fallbacks, shadow=shadow, deadline=deadline
    )


async def scrape(
    client: httpx.AsyncClient, **kw: Any
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = await client.get("/metrics", **kw)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        value
        for (n, lbls), value in samples.items()
        if n == name and all(dict(lbls).get(k) == v for k, v in labels.items())
    )
