"""Bodies made of very many small JSON values (100,000 empty chat messages or prompt
strings in 3 MB) are read off the event loop: the C JSON parser holds the GIL for the
whole parse, so such bodies go through the pure-Python scanner in a worker thread.
/health keeps answering in under 50 ms (p99) while they are read and refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BLOOM_ID
from tests.support.probes import health_while, p99
from tests.support.server import GatewayProcess, model_config


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny_bloom_path: Path
) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("hostile-loop")
    config = folder / "gateway.toml"
    config.write_text(model_config(BLOOM_ID, {"model_path": str(tiny_bloom_path), "n_ctx": 256}))
    with GatewayProcess(config, folder / "gateway.log") as proc:
        yield proc


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {"model": BLOOM_ID, "messages": [{"role": "user", "content": ""}] * 100_000},
        ),
        ("/v1/completions", {"model": BLOOM_ID, "prompt": ["x"] * 100_000, "max_tokens": 1}),
    ],
    ids=["100k-chat-messages", "100k-prompt-strings"],
)
def test_many_value_bodies_leave_the_event_loop_free(
    gateway: GatewayProcess, path: str, body: dict[str, Any]
) -> None:
    response, latencies = health_while(gateway.base_url, path, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "limit_exceeded"
    worst = p99(latencies)
    assert worst < 0.05, f"/health p99 {worst * 1000:.0f} ms over {len(latencies)} probes"
