"""A streaming load client: N concurrent clients, each sending its requests one after
another over SSE, recording when every text chunk arrives."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from bench.prompts import MAX_TOKENS, prompt_for


@dataclass
class RequestRecord:
    start: float  # seconds since the run started
    stamps: list[float] = field(default_factory=list)  # chunk arrival, seconds since start
    tokens: int = 0  # completion tokens (usage when reported, else text chunks)
    finish_reason: str | None = None
    done: bool = False  # the stream ended with [DONE]
    error: str | None = None
    text: str = ""
    chunks: list[str] = field(default_factory=list)  # the text of each chunk, in order

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "chunks"}


async def stream_one(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], t_run: float
) -> RequestRecord:
    t0 = time.perf_counter()
    rec = RequestRecord(start=t0 - t_run)
    texts: list[str] = []
    usage_tokens: int | None = None
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                rec.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return rec
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    rec.done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    rec.error = str(chunk["error"])[:200]
                    continue
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"].get("completion_tokens")
                for choice in chunk.get("choices") or ():
                    if choice.get("text"):
                        rec.stamps.append(time.perf_counter() - t0)
                        texts.append(choice["text"])
                    rec.finish_reason = choice.get("finish_reason") or rec.finish_reason
    except httpx.HTTPError as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    rec.text = "".join(texts)
    rec.chunks = texts
    rec.tokens = usage_tokens if usage_tokens is not None else len(rec.stamps)
    return rec


def completion_body(model: str, prompt: str, usage: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
    }
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


async def run_load(
    base_url: str, model: str, concurrency: int, rounds: int, usage: bool = True
) -> dict[str, Any]:
    """`concurrency` clients, each sending `rounds` requests back to back."""
    url = f"{base_url}/v1/completions"
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        t_run = time.perf_counter()

        async def one_client(c: int) -> list[RequestRecord]:
            out = []
            for r in range(rounds):
                body = completion_body(model, prompt_for(c, r), usage)
                out.append(await stream_one(client, url, body, t_run))
            return out

        per_client = await asyncio.gather(*(one_client(c) for c in range(concurrency)))
        wall = time.perf_counter() - t_run
    records = [r.as_json() for recs in per_client for r in recs]
    return {"wall": wall, "records": records}


class HealthProbe:
    """Polls GET /health from its own thread (its own connection, no event loop shared
    with the load client) and records each round trip."""

    def __init__(self, base_url: str, interval: float = 0.02) -> None:
        self._url = f"{base_url}/health"
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.latencies_ms: list[float] = []

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                client.get(self._url).raise_for_status()
                self.latencies_ms.append((time.perf_counter() - t0) * 1000)
                self._stop.wait(self._interval)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
