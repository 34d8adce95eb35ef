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
from backends.errors import BackendError, ConfigError, InvalidRequest
from backends.registry import load_backend_class
from backends.worker import ProcessBackend, WorkerOptions
from gateway.config import ConfigFileError, GatewayConfig, ModelConfig
from gateway.errors import APIError, model_not_found

log = structlog.get_logger("gateway.registry")
State = Literal["loading", "ready", "failed"]


@dataclass
class ServedModel:
    id: str
    backend: Backend
    state: State = "loading"
    error: str | None = None  # why it failed, safe to show to clients
    failed_while_serving: bool = False  # loaded, then its backend failed (not the load)
    created: int = field(default_factory=lambda: int(time.time()))

    def current_state(self) -> str:
        """loading / failed / ready, or `unavailable` while a loaded backend says it
        cannot serve for now. A backend whose health turns `failed` (its engine died)
        is marked failed for good: the gateway must be restarted."""
        if self.state != "ready":
            return self.state
        health = self.backend.health()
        if health.state == "failed":
            self.state, self.error = "failed", health.reason or "the backend failed"
            self.failed_while_serving = True
            log.error("model failed while serving", model=self.id, error=self.error)
            return self.state
        return health.state


def _build_backend(model: ModelConfig, config: GatewayConfig) -> Backend:
    """The model's backend, wrapped in a supervised worker process when its isolation
    (or its backend's default) is "process"."""
    backend_cls = load_backend_class(model.backend)
    isolation = model.isolation or backend_cls.default_isolation
    if isolation != "process":
        if model.worker:
            raise ConfigError('needs isolation = "process"', "worker")
        return backend_cls.from_config(model.id, model.options, config.base_dir)
    try:
        WorkerOptions.parse(model.worker)
    except ConfigError as exc:
        raise ConfigError(str(exc), f"worker.{exc.key}") from None
    return ProcessBackend.from_config(
        model.id,
        {"backend": model.backend, "options": model.options, "worker": model.worker},
        config.base_dir,
    )


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
                backend = _build_backend(model, config)
            except ConfigError as exc:
                key = exc.key if exc.key and exc.key.startswith(("backend", "worker")) else (
                    f"options.{exc.key or '?'}"
                )
                raise ConfigFileError(f"{where}: {key}: {exc}") from None
            served.append(ServedModel(model.id, backend))
        return cls(served)

    @property
    def models(self) -> list[ServedModel]:
        for model in self._models.values():
            model.current_state()  # notice an engine that died since the last look
        return list(self._models.values())

    @property
    def ready(self) -> bool:
        return all(m.current_state() == "ready" for m in self._models.values())

    def get(self, model_id: str) -> Backend:
        model = self._models.get(model_id)
        if model is None:
            raise model_not_found(model_id)
        state = model.current_state()
        if state == "loading":
            raise APIError(
                503,
                f"The model '{model_id}' is still loading; retry shortly.",
                "server_error",
                "model",
                "model_not_ready",
                {"retry-after": "2"},
            )
        if state == "failed":
            raise self._failed(model)
        return model.backend

    def unavailable(self, model_id: str) -> APIError | None:
        """The 503 for a model that has failed (looked at after a request failed: the
        engine may have died under it), or None."""
        model = self._models.get(model_id)
        if model is None or model.current_state() != "failed":
            return None
        return self._failed(model)

    @staticmethod
    def _failed(model: ServedModel) -> APIError:
        what = "is unavailable" if model.failed_while_serving else "failed to load"
        return APIError(
            503,
            f"The model '{model.id}' {what}: {model.error}",
            "server_error",
            "model",
            "model_unavailable",
        )

    async def load_all(self, on_failure: Callable[[str], None]) -> None:
        for model in self._models.values():
            try:
                await model.backend.load()
            except (BackendError, ConfigError, InvalidRequest) as exc:
                self._load_failed(model, str(exc), on_failure)
                return
            except OSError as exc:  # its text may hold a path: say only what went wrong
                self._load_failed(model, exc.strerror or type(exc).__name__, on_failure)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("model failed to load", model=model.id)
                model.state, model.error = "failed", type(exc).__name__
                on_failure(f"model {model.id!r} failed to load: {type(exc).__name__}")
                return
            model.state = "ready"

    @staticmethod
    def _load_failed(model: ServedModel, why: str, on_failure: Callable[[str], None]) -> None:
        model.state, model.error = "failed", why
        log.error("model failed to load", model=model.id, error=why)
        on_failure(f"model {model.id!r} failed to load: {why}")

    async def aclose(self) -> None:
        for model in self._models.values():
            try:
                await model.backend.aclose()
            except Exception:
                log.exception("error while closing a model", model=model.id)
