"""A client that goes away stops its generation within a few tokens.

The gateway here has ONE slot for SmolLM2, so an abandoned generation that kept
running would hold the slot and delay the next request until its 3,000 tokens were
done. The follow-up must instead start at once: it must take well under a quarter of
the time the abandoned request still needed, measured at the decode speed of the
moment (the machine may be shared, so no fixed number of seconds is right)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SMOL_ID, two_model_config
from tests.support.server import GatewayProcess

LONG = {
    "model": SMOL_ID,
    "prompt": "Count from one to ten thousand: one, two, three,",
    "max_tokens": 3000,
    "temperature": 0,
    "logit_bias": {"0": -100, "1": -100, "2": -100},
}  # no end-of-text: it would go on


@pytest.fixture(scope="module")
def one_slot_gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny_bloom_path: Path
) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("one-slot")
    config = folder / "gateway.toml"
    config.write_text(two_model_config(tiny_bloom_path, smol_parallel=1, smol_ctx=4096))
    with GatewayProcess(config, folder / "gateway.log") as proc:
        yield proc


def abandoned_would_need_s(base_url: str) -> float:
    """Seconds the abandoned request would still have run: its remaining tokens at the
    decode speed measured now."""
    started = time.perf_counter()
    r = httpx.post(f"{base_url}/v1/completions", timeout=300, json={**LONG, "max_tokens": 32})
    assert r.json()["usage"]["completion_tokens"] == 32
    rate = 32 / (time.perf_counter() - started)
    return (LONG["max_tokens"] - 50) / rate


def wait_idle(base_url: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    stats = engine_stats(base_url)
    while (stats["busy"] or stats["queued"]) and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = engine_stats(base_url)
    return stats


def follow_up_seconds(base_url: str) -> float:
    started = time.perf_counter()
    r = httpx.post(
        f"{base_url}/v1/completions",
        timeout=120,
        json={"model": SMOL_ID, "prompt": "Hi", "max_tokens": 4, "temperature": 0},
    )
    assert r.status_code == 200
    return time.perf_counter() - started


def engine_stats(base_url: str) -> dict:
    data = httpx.get(f"{base_url}/v1/backends").json()["data"]
    return next(m for m in data if m["model"] == SMOL_ID)["stats"]


def test_abandoned_stream_frees_its_slot(one_slot_gateway: GatewayProcess) -> None:
    base = one_slot_gateway.base_url
    with httpx.stream(
        "POST", f"{base}/v1/completions", json={**LONG, "stream": True}, timeout=60
    ) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]  # a few events: generation is running
        assert any(line.startswith("data: {") for line in received)
        assert engine_stats(base)["busy"] == 1
    # the connection is closed here, mid-stream
    assert follow_up_seconds(base) < abandoned_would_need_s(base) / 4
    assert wait_idle(base)["busy"] == 0


def test_abandoned_plain_request_frees_its_slot(one_slot_gateway: GatewayProcess) -> None:
    base = one_slot_gateway.base_url
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/v1/completions", json=LONG, timeout=1.5)
    assert follow_up_seconds(base) < abandoned_would_need_s(base) / 4
    assert wait_idle(base)["busy"] == 0


def test_queued_request_whose_client_leaves_is_dropped(one_slot_gateway: GatewayProcess) -> None:
    base = one_slot_gateway.base_url
    with httpx.stream(
        "POST", f"{base}/v1/completions", json={**LONG, "stream": True}, timeout=60
    ) as running:
        next(running.iter_lines())
        # a second request waits for the only slot; its client gives up
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/completions", json=LONG, timeout=1.0)
        deadline = time.monotonic() + 10
        while engine_stats(base)["queued"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine_stats(base)["queued"] == 0
    assert follow_up_seconds(base) < abandoned_would_need_s(base) / 4
