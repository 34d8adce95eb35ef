"""A model whose engine dies is marked failed: /ready answers 503 and every request a
503 envelope that says why, instead of the model staying `ready` while each request
fails with a 500. Health is part of the backend contract (`Backend.health`).

The engine here is the real llama.cpp batching engine on a tiny BLOOM file; the
failure is injected into its context's decode call (the engine thread raises there, as
it would if llama.cpp failed), the only part that is not real."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from backends.base import Health
from backends.llama_cpp import LlamaCppBackend
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.registry import ModelRegistry, ServedModel
from tests.support.inprocess import ScriptedBackend, asgi_client

BODY = {"model": "m", "prompt": "Hello there", "max_tokens": 40, "temperature": 0}


def app_for(*models: ServedModel):  # type: ignore[no-untyped-def]
    return create_app(
        GatewayConfig(ServerSettings(), (), Path("inline.toml")), ModelRegistry([*models])
    )


async def wait_ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 60
    while (await client.get("/ready")).status_code != 200:
        assert time.monotonic() < deadline, "the model did not load"
        await asyncio.sleep(0.05)


def break_engine(backend: LlamaCppBackend, on_decode: int) -> None:
    """Make the engine thread raise inside its `on_decode`-th decode from now."""
    ctx = backend._ctx
    assert ctx is not None
    real = ctx.decode
    calls = 0

    def decode(entries):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls >= on_decode:
            raise RuntimeError("decode failed in /srv/private/build/ggml.c")
        real(entries)

    ctx.decode = decode  # type: ignore[method-assign]


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "model_unavailable" and error["param"] == "model"
    assert "The model 'm' is unavailable" in error["message"]
    assert "inference engine stopped" in error["message"] and "restart" in error["message"]
    assert "/srv" not in error["message"] and "ggml.c" not in error["message"]


def test_a_dead_engine_marks_its_model_failed(tiny_bloom_path: Path) -> None:
    backend = LlamaCppBackend.from_config(
        "m", {"model_path": str(tiny_bloom_path), "n_ctx": 128, "parallel": 2}, Path(".")
    )

    async def main() -> None:
        async with asgi_client(app_for(ServedModel("m", backend))) as client:
            await wait_ready(client)
            assert (await client.post("/v1/completions", json=BODY)).status_code == 200
            break_engine(backend, on_decode=1)
            # the request the engine died under
            assert_unavailable(await client.post("/v1/completions", json=BODY))
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["models"] == {"m": "failed"}
            assert "inference engine stopped" in ready.json()["errors"]["m"]
            # every later request: a 503 at once, not a 500 from the dead engine
            for _ in range(3):
                assert_unavailable(await client.post("/v1/completions", json=BODY))
            chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            assert (await client.post("/v1/chat/completions", json=chat)).status_code in (
                400,  # the tiny model has no chat template: refused before the engine
                503,
            )
            backends = (await client.get("/v1/backends")).json()["data"]
            assert backends[0]["state"] == "failed"

    asyncio.run(main())


def test_a_stream_the_engine_dies_under_ends_with_the_reason(tiny_bloom_path: Path) -> None:
    backend = LlamaCppBackend.from_config(
        "m", {"model_path": str(tiny_bloom_path), "n_ctx": 128, "parallel": 2}, Path(".")
    )

    async def main() -> None:
        async with asgi_client(app_for(ServedModel("m", backend))) as client:
            await wait_ready(client)
            break_engine(backend, on_decode=4)  # a few tokens in
            body = {**BODY, "stream": True, "logit_bias": {"2": -100}}
            response = await client.post("/v1/completions", json=body)
            assert response.status_code == 200  # the headers went out before it died
            events = [
                json.loads(line[6:])
                for line in response.text.splitlines()
                if line.startswith("data: {")
            ]
            assert any(e.get("choices") for e in events)  # some text first
            error = events[-1]["error"]
            assert error["code"] == "model_unavailable"
            assert "inference engine stopped" in error["message"]
            assert "data: [DONE]" not in response.text
            assert (await client.get("/ready")).status_code == 503

    asyncio.run(main())


class Unavailable(ScriptedBackend):
    """A loaded backend that says it cannot serve now (like a remote model whose
    replicas are all down): a test double for the gateway's own logic."""

    def health(self) -> Health:
        return Health("unavailable", "no upstream replica is healthy")


def test_ready_follows_the_backends_health() -> None:
    async def main() -> None:
        app = app_for(
            ServedModel("up", ScriptedBackend("up")), ServedModel("down", Unavailable("down"))
        )
        async with asgi_client(app) as client:
            deadline = time.monotonic() + 10
            while (body := (await client.get("/ready")).json())["models"]["up"] != "ready":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["models"] == {"up": "ready", "down": "unavailable"}
            assert body["status"] == "not_ready"

    asyncio.run(main())
