"""The models this gateway serves: built from config at startup (failing loudly),
loaded in the background, looked up by id per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

from backends.base import Backend
from backends.errors import BackendError, ConfigError
from backends.registry import load_backend_class
from gateway.config import ConfigFileError, GatewayConfig
from gateway.errors import APIError, model_not_found

log = structlog.get_logger("gateway.registry")
State = Literal["loading", "ready", "failed"]


@dataclass
class ServedModel:
    id: str
    backend: Backend
    state: State = "loading"
    error: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))


class ModelRegistry:
    def __init__(self, models: list[ServedModel]) -> None:
        self._models = {m.id: m for m in models}

    @classmethod
    def from_config(cls, config: GatewayConfig) -> ModelRegistry:
        """Find each model's backend and validate its options (cheap: no weights are
        loaded). Raises ConfigFileError naming the file, model and key."""
        served: list[ServedModel] = []
        for i, model in enumerate(config.models):
            where = f"{config.path}: models[{i}] ({model.id})"
            try:
                backend_cls = load_backend_class(model.backend)
                backend = backend_cls.from_config(model.id, model.options, config.base_dir)
            except ConfigError as exc:
                key = "backend" if exc.key == "backend" else f"options.{exc.key or '?'}"
                raise ConfigFileError(f"{where}: {key}: {exc}") from None
            served.append(ServedModel(model.id, backend))
        return cls(served)

    @property
    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    @property
    def ready(self) -> bool:
        return all(m.state == "ready" for m in self._models.values())

    def get(self, model_id: str) -> Backend:
        model = self._models.get(model_id)
        if model is None:
            raise model_not_found(model_id)
        if model.state == "loading":
            raise APIError(
                503,
                f"The model '{model_id}' is still loading; retry shortly.",
                "server_error",
                "model",
                "model_not_ready",
                {"retry-after": "2"},
            )
        if model.state == "failed":
            raise APIError(
                503,
                f"The model '{model_id}' failed to load: {model.error}",
                "server_error",
                "model",
                "model_unavailable",
            )
        return model.backend

    async def load_all(self, on_failure: Callable[[str], None]) -> None:
        for model in self._models.values():
            try:
                await model.backend.load()
            except (BackendError, ConfigError, OSError) as exc:
                model.state, model.error = "failed", str(exc)
                log.error("model failed to load", model=model.id, error=str(exc))
                on_failure(f"model {model.id!r} failed to load: {exc}")
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                model.state, model.error = "failed", type(exc).__name__
                log.exception("model failed to load", model=model.id)
                on_failure(f"model {model.id!r} failed to load: {type(exc).__name__}")
                return
            model.state = "ready"

    async def aclose(self) -> None:
        for model in self._models.values():
            try:
                await model.backend.aclose()
            except Exception:
                log.exception("error while closing a model", model=model.id)
