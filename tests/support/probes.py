"""Measure how the event loop of a live gateway answers while a request runs."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx


def health_while(
    base_url: str, path: str, body: dict[str, Any] | bytes
) -> tuple[httpx.Response, list[float]]:
    """POST `body` (JSON, or bytes sent as they are) to `path` from another thread and
    probe /health until the answer comes: (the answer, the probes' latencies in seconds,
    sorted)."""
    outcome: dict[str, httpx.Response] = {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}

    def send() -> None:
        outcome["r"] = httpx.post(
            f"{base_url}{path}", content=content, headers=headers, timeout=300
        )

    sender = threading.Thread(target=send)
    latencies: list[float] = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        client.get("/health")  # a warm connection
        sender.start()
        while sender.is_alive():
            started = time.perf_counter()
            assert client.get("/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
    sender.join()
    return outcome["r"], sorted(latencies)


def p99(latencies: list[float]) -> float:
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
