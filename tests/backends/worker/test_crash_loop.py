"""Models whose worker crashes (or hangs) on every load: they reach `crashed` after the
configured number of attempts, with backoff, while the gateway starts and serves its
other model. And a gateway killed with SIGKILL leaves no worker behind."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.plugins import install_plugin
from tests.support.server import GatewayProcess

BLOOM = "tiny-bloom"


def crash_loop_config(bloom: Path) -> str:
    return f"""
[server]
log_format = "json"

[[models]]
id = "segfaults"
backend = "misbehaving"
[models.options]
on_load = "segfault"
[models.worker]
restart_backoff_initial = 0.2
crash_limit = 3
crash_window = 120

[[models]]
id = "hangs"
backend = "misbehaving"
isolation = "process"
[models.options]
on_load = "hang"
[models.worker]
restart_backoff_initial = 0.2
crash_limit = 2
heartbeat_timeout = 1

[[models]]
id = "{BLOOM}"
backend = "llama_cpp"
[models.options]
model_path = "{bloom}"
n_ctx = 256
"""


def plugin_env(tmp: Path) -> dict[str, str]:
    path = str(install_plugin(tmp / "plugin"))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")]))}


def backends(base_url: str) -> dict[str, dict[str, Any]]:
    data = httpx.get(f"{base_url}/v1/backends", timeout=10).json()["data"]
    return {entry["model"]: entry for entry in data}


def poll(predicate: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def crash_loop(tmp_path: Path, tiny_bloom_path: Path) -> Iterator[GatewayProcess]:
    (tmp_path / "gateway.toml").write_text(crash_loop_config(tiny_bloom_path))
    proc = GatewayProcess(tmp_path / "gateway.toml", tmp_path / "log", env=plugin_env(tmp_path))
    proc.start(wait_ready=False)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.slow
def test_models_that_crash_on_load_reach_crashed_and_the_others_serve(
    crash_loop: GatewayProcess,
) -> None:
    base = crash_loop.base_url
    poll(
        lambda: httpx.get(f"{base}/ready", params={"model": BLOOM}).status_code == 200,
        "the other model to serve",
    )
    ok = httpx.post(f"{base}/v1/completions", json={"model": BLOOM, "prompt": "Hi"})
    assert ok.status_code == 200, ok.text
    poll(
        lambda: all(
            backends(base)[m]["worker"]["state"] == "crashed" for m in ("segfaults", "hangs")
        ),
        "both misbehaving models to be marked crashed",
    )
    states = backends(base)
    segfaults, hangs = states["segfaults"]["worker"], states["hangs"]["worker"]
    assert states["segfaults"]["isolation"] == "process"  # the backend's default
    assert segfaults["last_exit"] == "SIGSEGV" and segfaults["restarts"] == 2
    assert hangs["last_exit"] == "SIGKILL" and hangs["restarts"] == 1  # killed: no heartbeat
    for status in (segfaults, hangs):
        assert status["pid"] is None
        assert status["next_attempt"] > time.time() + 60  # the long cool-down
    assert states[BLOOM]["isolation"] == "none" and states[BLOOM]["worker"] is None
    ready = httpx.get(f"{base}/ready")
    assert ready.status_code == 503
    assert ready.json()["models"]["segfaults"] == "unavailable"
    refused = httpx.post(f"{base}/v1/completions", json={"model": "segfaults", "prompt": "Hi"})
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) > 60
    error = refused.json()["error"]
    assert error["code"] == "backend_crashed" and "crashed repeatedly" in error["message"]
    assert "SIGSEGV" in error["message"]
    assert crash_loop.returncode is None
    again = httpx.post(f"{base}/v1/completions", json={"model": BLOOM, "prompt": "Hi"})
    assert again.status_code == 200


def process_gone(pid: int) -> bool:
    """Exited (a zombie waiting for a reaper counts as gone: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_no_worker_outlives_a_gateway_killed_with_sigkill(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(
        '[[models]]\nid = "w"\nbackend = "misbehaving"\n'
        '[[models]]\nid = "w2"\nbackend = "misbehaving"\n'
    )
    proc = GatewayProcess(tmp_path / "gateway.toml", tmp_path / "log", env=plugin_env(tmp_path))
    with proc:
        states = backends(proc.base_url)
        pids = [states[m]["worker"]["pid"] for m in ("w", "w2")]
        assert all(pids) and all(not process_gone(pid) for pid in pids)
        assert proc._proc is not None
        proc._proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        poll(lambda: all(process_gone(pid) for pid in pids), "the workers to die", 30)


@pytest.mark.slow
def test_a_worker_whose_engine_fails_is_restarted_not_failed_for_good(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(
        '[[models]]\nid = "w"\nbackend = "misbehaving"\n'
        "[models.options]\nengine_fails_after = 1\n"
        "[models.worker]\nheartbeat_timeout = 5\nrestart_backoff_initial = 0.2\n"
    )
    proc = GatewayProcess(tmp_path / "gateway.toml", tmp_path / "log", env=plugin_env(tmp_path))
    with proc:
        first = backends(proc.base_url)["w"]["worker"]
        body = {"model": "w", "prompt": "Hi"}
        assert httpx.post(f"{proc.base_url}/v1/completions", json=body).status_code == 200
        poll(
            lambda: (
                backends(proc.base_url)["w"]["worker"]["restarts"] == 1
                and backends(proc.base_url)["w"]["worker"]["state"] == "ready"
            ),
            "the worker to be replaced",
        )
        entry = backends(proc.base_url)["w"]
        assert entry["state"] == "ready" and entry["worker"]["pid"] != first["pid"]
        assert entry["worker"]["last_exit"] == "SIGKILL"
        assert httpx.get(f"{proc.base_url}/ready").status_code == 200
        assert httpx.post(f"{proc.base_url}/v1/completions", json=body).status_code == 200
