"""The first body of very many JSON values after startup. Parsing 100,000 messages (off
the event loop) allocates so many objects that Python's collector runs a full pass, and
a full pass walks every object alive, holding the GIL throughout: with SmolLM2 and a
few upstream models loaded, that walk of the startup heap paused /health for 36-62 ms,
once per process. `gateway serve` freezes its startup heap (`gc.freeze`) once it
listens, so the walk skips it (7-13 ms measured)."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.config import ServerSettings
from gateway.server import GatewayServer, build_server
from tests.support.edge import EdgeServer
from tests.support.inprocess import ScriptedBackend, scripted_app
from tests.support.probes import health_while, p99
from tests.support.server import GatewayProcess, free_port

MODEL = "smol"
MESSAGES = b'{"role": "user", "content": ""}'


def config(model: Path) -> str:
    """A model and seven upstream models, as `bench.attack` serves them (the upstreams
    are never asked: they only add their share of the startup heap)."""
    text = (
        f'[[models]]\nid = "{MODEL}"\nbackend = "llama_cpp"\n[models.options]\n'
        f'model_path = "{model}"\nn_ctx = 2048\nparallel = 2\nthreads = 1\n'
    )
    port = free_port()
    for k in range(7):
        text += (
            f'\n[[models]]\nid = "up-{k}"\nbackend = "openai_http"\n[models.options]\n'
            f'upstreams = ["http://127.0.0.1:{port}"]\nmodel = "m{k}"\n'
        )
    return text


def wait_model(base_url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = httpx.get(f"{base_url}/v1/backends", timeout=2).json()["data"]
            if any(m["model"] == MODEL and m["state"] == "ready" for m in data):
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{MODEL} not ready after {timeout} s")


def test_first_many_value_body_after_startup_leaves_health_fast(
    tmp_path: Path, smollm2_path: Path
) -> None:
    (tmp_path / "gateway.toml").write_text(config(smollm2_path))
    gateway = GatewayProcess(tmp_path / "gateway.toml", tmp_path / "gateway.log")
    try:
        gateway.start(wait_ready=False)  # the upstreams never answer: /ready stays 503
        wait_model(gateway.base_url)
        head = f'{{"model": "{MODEL}", "max_tokens": 1, "messages": ['.encode()
        body = head + b",".join([MESSAGES] * 100_000) + b"]}"
        response, latencies = health_while(gateway.base_url, "/v1/chat/completions", body)
    finally:
        gateway.stop()
    assert response.status_code == 400, response.text
    worst = p99(latencies)
    assert worst < 0.05, f"/health p99 {worst * 1000:.0f} ms over {len(latencies)} probes"


class FrozenEdgeServer(EdgeServer):
    def build(self, app: Any) -> GatewayServer:
        return build_server(app, ServerSettings(), "127.0.0.1", self.port, freeze_heap=True)


def test_the_server_freezes_its_heap_only_when_asked() -> None:
    gc.unfreeze()
    try:
        with EdgeServer(scripted_app(ScriptedBackend("m"))) as server:
            assert isinstance(server.server, GatewayServer) and not server.server.freeze_heap
        assert gc.get_freeze_count() == 0  # tests and embedders keep their collector
        with FrozenEdgeServer(scripted_app(ScriptedBackend("m"))):
            assert gc.get_freeze_count() > 0  # as `gateway serve` runs it
    finally:
        gc.unfreeze()
