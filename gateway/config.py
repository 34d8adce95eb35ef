"""Load and validate the gateway's TOML configuration.

Errors name the file, the key and the problem. Environment variables override the
server settings (GATEWAY_HOST, GATEWAY_PORT, GATEWAY_API_KEYS, GATEWAY_LOG_FORMAT,
GATEWAY_LOG_LEVEL); command-line flags override both.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.edge_config import EDGE_KEYS, parse_edge
from gateway.limits import LimitsSettings, parse_limits
from gateway.metrics_config import MetricsSettings, parse_metrics
from gateway.records.config import StoreSettings, parse_store
from gateway.report.build import ReportSettings
from gateway.report.config import parse_report
from gateway.routing.config import RouteConfig, parse_routes

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


class ConfigFileError(Exception):
    """A configuration problem, with a message fit to print as it is."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = "auto"
    log_level: str = "info"
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    # the HTTP edge (gateway/edge_config.py reads these keys)
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_header_bytes: int = 64 * 1024
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 60.0
    keep_alive_seconds: float = 5.0
    max_connections: int = 1024
    shutdown_grace_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class ModelConfig:
    id: str
    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)
    hidden: bool = False  # served only through routes: not listed, not addressable
    isolation: str | None = None  # "process" | "none"; None: the backend's default
    worker: Mapping[str, Any] = field(default_factory=dict)  # [models.worker]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    server: ServerSettings
    models: tuple[ModelConfig, ...]
    path: Path | None = None
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    routes: tuple[RouteConfig, ...] = ()
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    store: StoreSettings | None = None  # [store]: experiment records and feedback
    report: ReportSettings = field(default_factory=ReportSettings)  # [report]: intervals

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


def load_config(path: Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, path, env)


def parse_config(raw: Mapping[str, Any], path: Path, env: Mapping[str, str]) -> GatewayConfig:
    def fail(key: str, problem: str) -> ConfigFileError:
        return ConfigFileError(f"{path}: {key}: {problem}")

    unknown = sorted(
        set(raw) - {"server", "models", "limits", "routes", "metrics", "store", "report"}
    )
    if unknown:
        raise fail(
            unknown[0],
            "unknown section (expected [server], [limits], [metrics], [store], [report], "
            "[[models]], [[routes]])",
        )
    server = _parse_server(raw.get("server", {}), fail)
    server = _apply_env(server, env, fail)
    models_raw = raw.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise fail("models", "at least one [[models]] table is required")
    models: list[ModelConfig] = []
    for i, entry in enumerate(models_raw):
        key = f"models[{i}]"
        if not isinstance(entry, dict):
            raise fail(key, "must be a table")
        extra = sorted(set(entry) - {"id", "backend", "options", "hidden", "isolation", "worker"})
        if extra:
            raise fail(
                f"{key}.{extra[0]}",
                "unknown key (expected id, backend, options, hidden, isolation, worker)",
            )
        model_id = entry.get("id")
        if not isinstance(model_id, str) or not MODEL_ID.match(model_id):
            raise fail(f"{key}.id", "must be a model id of letters, digits and ._:/@+-")
        if any(m.id == model_id for m in models):
            raise fail(f"{key}.id", f"duplicate model id {model_id!r}")
        backend = entry.get("backend")
        if not isinstance(backend, str) or not backend:
            raise fail(f"{key}.backend", 'must name a backend, e.g. "llama_cpp"')
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise fail(f"{key}.options", "must be a table")
        hidden = entry.get("hidden", False)
        if not isinstance(hidden, bool):
            raise fail(f"{key}.hidden", "must be true or false")
        isolation = entry.get("isolation")
        if isolation is not None and isolation not in ("process", "none"):
            raise fail(f"{key}.isolation", 'must be "process" or "none"')
        worker = entry.get("worker", {})
        if not isinstance(worker, dict):
            raise fail(f"{key}.worker", "must be a table")
        models.append(ModelConfig(model_id, backend, options, hidden, isolation, worker))
    limits = parse_limits(raw.get("limits", {}), fail)
    routes = parse_routes(raw.get("routes"), [m.id for m in models], fail)
    metrics = parse_metrics(raw.get("metrics", {}), fail)
    store = parse_store(raw.get("store"), fail)
    report = parse_report(raw.get("report"), fail)
    return GatewayConfig(server, tuple(models), path, limits, routes, metrics, store, report)


def _parse_server(raw: Any, fail: Any) -> ServerSettings:
    if not isinstance(raw, dict):
        raise fail("server", "must be a table")
    known = {"host", "port", "log_format", "log_level", "api_keys", "max_body_bytes", *EDGE_KEYS}
    extra = sorted(set(raw) - known)
    if extra:
        raise fail(f"server.{extra[0]}", f"unknown key (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    if "host" in raw:
        if not isinstance(raw["host"], str) or not raw["host"]:
            raise fail("server.host", "must be a non-empty string")
        values["host"] = raw["host"]
    for key, low, high in (("port", 0, 65535), ("max_body_bytes", 1024, 2**31)):
        if key in raw:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise fail(f"server.{key}", f"must be an integer from {low} to {high}")
            values[key] = value
    for key, allowed in (("log_format", LOG_FORMATS), ("log_level", LOG_LEVELS)):
        if key in raw:
            if raw[key] not in allowed:
                raise fail(f"server.{key}", f"must be one of {', '.join(allowed)}")
            values[key] = raw[key]
    if "api_keys" in raw:
        keys = raw["api_keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise fail("server.api_keys", "must be a list of non-empty strings")
        values["api_keys"] = tuple(keys)
    values.update(parse_edge(raw, fail))
    return ServerSettings(**values)


def _apply_env(server: ServerSettings, env: Mapping[str, str], fail: Any) -> ServerSettings:
    changes: dict[str, Any] = {}
    if env.get("GATEWAY_HOST"):
        changes["host"] = env["GATEWAY_HOST"]
    if env.get("GATEWAY_PORT"):
        try:
            changes["port"] = int(env["GATEWAY_PORT"])
        except ValueError:
            raise fail("GATEWAY_PORT (environment)", "must be an integer") from None
    if env.get("GATEWAY_API_KEYS"):
        changes["api_keys"] = tuple(k.strip() for k in env["GATEWAY_API_KEYS"].split(",") if k)
    for key, allowed in (("log_format", LOG_FORMATS), ("log_level", LOG_LEVELS)):
        value = env.get(f"GATEWAY_{key.upper()}")
        if value:
            if value not in allowed:
                raise fail(f"GATEWAY_{key.upper()} (environment)", f"must be one of {allowed}")
            changes[key] = value
    return replace(server, **changes)
