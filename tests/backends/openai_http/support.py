"""Configs and processes for the openai_http tests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import GatewayProcess


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def gateway_config(models: dict[str, tuple[str, dict[str, Any]]]) -> str:
    """{model id: (backend, options)} -> a gateway TOML config."""
    lines = ["[server]", 'log_format = "json"', ""]
    for model_id, (backend, options) in models.items():
        lines += ["[[models]]", f'id = "{model_id}"', f'backend = "{backend}"',
                  "[models.options]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]
        lines.append("")
    return "\n".join(lines)


def start_gateway(folder: Path, name: str, models: dict[str, tuple[str, dict[str, Any]]],
                  wait_ready: bool = True, port: int | None = None) -> GatewayProcess:
    config = folder / f"{name}.toml"
    config.write_text(gateway_config(models))
    proc = GatewayProcess(config, folder / f"{name}.log", port=port)
    proc.start(wait_ready=wait_ready)
    if not wait_ready:
        wait_loaded(proc)
    return proc


def wait_loaded(proc: GatewayProcess, timeout: float = 60) -> None:
    """Every model has left the `loading` state (for gateways that are deliberately
    not ready, e.g. with a dead upstream)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"gateway exited:\n{proc.logs()}")
        try:
            data = httpx.get(f"{proc.base_url}/v1/backends", timeout=2).json()["data"]
            if all(m["state"] != "loading" for m in data):
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(proc.logs())


def replica_states(proc: GatewayProcess, model: str) -> list[dict[str, Any]]:
    data = httpx.get(f"{proc.base_url}/v1/backends", timeout=5).json()["data"]
    return next(m for m in data if m["model"] == model)["stats"]["replicas"]
