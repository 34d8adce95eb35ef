"""A client that goes away stops its generation within a few tokens.

The gateway here has ONE slot for SmolLM2, and the abandoned request asks for 3,000
tokens with end-of-text banned, so it could only leave its slot early by being
cancelled. Each test counts engine steps (one per generated token of a lone sequence)
from the request's start until the slot is free again: a fraction of the 3,000. Steps,
not seconds, so a busy machine slows both sides alike; the only clock is a generous
deadline that turns a hang into a failure."""

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


MAX_STEPS = LONG["max_tokens"] // 4  # an abandoned request must free its slot well before


def wait_idle(base_url: str, timeout: float = 120) -> dict:
    """Engine stats once nothing runs or waits (polled; fails at the deadline)."""
    deadline = time.monotonic() + timeout
    stats = engine_stats(base_url)
    while stats["busy"] or stats["queued"]:
        assert time.monotonic() < deadline, f"the engine is still busy: {stats}"
        time.sleep(0.05)
        stats = engine_stats(base_url)
    return stats


def follow_up_works(base_url: str) -> None:
    r = httpx.post(
        f"{base_url}/v1/completions",
        timeout=120,
        json={"model": SMOL_ID, "prompt": "Hi", "max_tokens": 4, "temperature": 0},
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


def engine_stats(base_url: str) -> dict:
    data = httpx.get(f"{base_url}/v1/backends").json()["data"]
    return next(m for m in data if m["model"] == SMOL_ID)["stats"]


def test_abandoned_stream_frees_its_slot(one_slot_gateway: GatewayProcess) -> None:
    base = one_slot_gateway.base_url
    steps_before = wait_idle(base)["steps"]
    with httpx.stream(
        "POST", f"{base}/v1/completions", json={**LONG, "stream": True}, timeout=60
    ) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]  # a few events: generation is running
        assert any(line.startswith("data: {") for line in received)
        assert engine_stats(base)["busy"] == 1
    # the connection is closed here, mid-stream
    assert wait_idle(base)["steps"] - steps_before < MAX_STEPS
    follow_up_works(base)


def test_abandoned_plain_request_frees_its_slot(one_slot_gateway: GatewayProcess) -> None:
    base = one_slot_gateway.base_url
    steps_before = wait_idle(base)["steps"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/v1/completions", json=LONG, timeout=1.5)
    assert wait_idle(base)["steps"] - steps_before < MAX_STEPS
    follow_up_works(base)


def test_queued_request_whose_client_leaves_is_dropped(one_slot_gateway: GatewayProcess) -> None:
    base = one_slot_gateway.base_url
    steps_before = wait_idle(base)["steps"]
    with httpx.stream(
        "POST", f"{base}/v1/completions", json={**LONG, "stream": True}, timeout=60
    ) as running:
        next(running.iter_lines())
        # a second request waits for the only slot; its client gives up
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/completions", json=LONG, timeout=1.0)
        deadline = time.monotonic() + 120
        while engine_stats(base)["queued"]:
            assert time.monotonic() < deadline, "the abandoned request is still queued"
            time.sleep(0.05)
    # Both gone: had the queued one been run after all, it would hold the slot for its
    # 3,000 tokens.
    assert wait_idle(base)["steps"] - steps_before < MAX_STEPS
    follow_up_works(base)
