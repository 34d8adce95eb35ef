"""Measure how the event loop of a live gateway answers while a request runs."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx


def health_while(
    base_url: str, path: str, body: dict[str, Any]
) -> tuple[httpx.Response, list[float]]:
    """POST `body` to `path` from another thread and probe /health until the answer
    comes: (the answer, the probes' latencies in seconds, sorted)."""
    outcome: dict[str, httpx.Response] = {}

    def send() -> None:
        outcome["r"] = httpx.post(f"{base_url}{path}", json=body, timeout=300)

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
