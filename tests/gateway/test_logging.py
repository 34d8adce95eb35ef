"""One JSON access line per request, and a model-load line, in the server's log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.conftest import SMOL_ID
from tests.support.server import GatewayProcess, model_config


def log_lines(gateway: GatewayProcess) -> list[dict]:
    out = []
    for line in gateway.logs().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def find_access(gateway: GatewayProcess, request_id: str, timeout: float = 60) -> dict:
    """The access line is written once the response is sent: poll for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_lines(gateway):
            if line.get("event") == "request" and line.get("request_id") == request_id:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id}")


def test_access_line_for_a_streamed_completion(gateway: GatewayProcess) -> None:
    body = {"model": SMOL_ID, "prompt": "Hello", "max_tokens": 6, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{gateway.base_url}/v1/completions", json=body) as r:
        r.read()
        request_id = r.headers["x-request-id"]
    line = find_access(gateway, request_id)
    assert line["status"] == 200
    assert line["model"] == SMOL_ID
    assert line["stream"] is True
    assert line["completion_tokens"] == 6
    assert line["prompt_tokens"] >= 1
    assert 0 < line["ttft_ms"] <= line["total_ms"]
    assert line["path"] == "/v1/completions"
    assert line["level"] == "info" and "timestamp" in line


def test_access_line_for_an_error(gateway: GatewayProcess) -> None:
    r = httpx.post(
        f"{gateway.base_url}/v1/completions",
        json={"model": "nope", "prompt": "x"},
        headers={"x-request-id": "test-error-line"},
    )
    assert r.status_code == 404
    line = find_access(gateway, "test-error-line")
    assert line["status"] == 404 and line["error"] == "model_not_found"


def test_model_load_is_logged(gateway: GatewayProcess) -> None:
    loads = [line for line in log_lines(gateway) if line.get("event") == "model loaded"]
    assert {line["model"] for line in loads} == {"smollm2", "tiny-bloom"}
    for line in loads:
        assert line["file"].endswith(".gguf")
        assert line["size_mib"] > 0
        assert line["load_seconds"] >= 0
        assert line["kv_cache_mib"] > 0


def test_console_format_is_readable(tmp_path: Path, tiny_bloom_path: Path) -> None:
    """What a person sees on a terminal: key=value lines, not JSON."""
    config = tmp_path / "console.toml"
    config.write_text(model_config("m", {"model_path": str(tiny_bloom_path), "n_ctx": 128}))
    gateway = GatewayProcess(config, tmp_path / "log", env={"GATEWAY_LOG_FORMAT": "console"})
    with gateway:
        r = httpx.post(
            f"{gateway.base_url}/v1/completions",
            json={"model": "m", "prompt": "hi", "max_tokens": 2},
        )
        assert r.status_code == 200
        deadline = time.monotonic() + 60  # the access line follows the response
        while "path=/v1/completions" not in gateway.logs():
            assert time.monotonic() < deadline, gateway.logs()
            time.sleep(0.05)
    lines = [line for line in gateway.logs().splitlines() if "path=/v1/completions" in line]
    assert lines and not lines[0].lstrip().startswith("{")
    assert "status=200" in lines[0] and f"request_id={r.headers['x-request-id']}" in lines[0]
    assert any(
        "model loaded" in line and "size_mib=" in line for line in gateway.logs().splitlines()
    )
