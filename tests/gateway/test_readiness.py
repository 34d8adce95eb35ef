"""/ready is 503 until every configured model has loaded; requests for a model still
loading get a 503 envelope with Retry-After, not a hang or a 500."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx

from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.registry import ModelRegistry, ServedModel
from tests.support.inprocess import ScriptedBackend, ThreadedServer


class SlowLoading(ScriptedBackend):
    """Loads only when the test says so (a test double for the gateway's own logic)."""

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self.release = threading.Event()

    async def load(self) -> None:
        while not self.release.is_set():
            await asyncio.sleep(0.02)


def test_ready_waits_for_every_model() -> None:
    slow = SlowLoading("slow")
    models = ModelRegistry(
        [ServedModel("fast", ScriptedBackend("fast")), ServedModel("slow", slow)]
    )
    app = create_app(GatewayConfig(ServerSettings(), (), Path("inline.toml")), models)
    with ThreadedServer(app) as server:
        assert httpx.get(f"{server.base_url}/health").status_code == 200
        ready = httpx.get(f"{server.base_url}/ready")
        assert ready.status_code == 503
        assert ready.json()["models"] == {"fast": "ready", "slow": "loading"}
        r = httpx.post(f"{server.base_url}/v1/completions", json={"model": "slow", "prompt": "x"})
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["error"]["code"] == "model_not_ready"
        fast = httpx.post(
            f"{server.base_url}/v1/completions", json={"model": "fast", "prompt": "x"}
        )
        assert fast.status_code == 200  # a loaded model serves while another loads
        slow.release.set()
        deadline = time.monotonic() + 5
        while httpx.get(f"{server.base_url}/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = httpx.post(f"{server.base_url}/v1/completions", json={"model": "slow", "prompt": "x"})
        assert r.status_code == 200
