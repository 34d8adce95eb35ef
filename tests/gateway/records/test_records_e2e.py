"""Records and feedback end to end with real gateway processes on loopback (the
variants' models are openai_http upstreams: scripted servers on real sockets).

- SQLite (the default store): traffic through an experiment, streams included, and
  feedback posted for some request ids; the stored counts per variant equal what was
  sent, in the store and in the report, the feedback is there.
- Scale-out: a PostgreSQL cluster this test starts, two gateway processes on different
  ports with the same config and store, traffic split across them, feedback posted to
  the other replica than the one that served; the store, and the report of either
  replica (GET /v1/experiments/{name}/report), count all requests from both.
  Then PostgreSQL stops mid-run: requests keep succeeding, each replica counts its
  drops in /metrics, feedback answers 503; it comes back: writes resume."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.records.model import RecordStore
from gateway.records.postgres import PostgresStore
from gateway.records.sqlite import SQLiteStore
from tests.backends.openai_http.fake_upstream import FakeUpstream
from tests.support.postgres import PgCluster, postgres_bin
from tests.support.server import GatewayProcess

EXPERIMENT = "a-vs-b"


def config(store_url: str, upstreams: dict[str, FakeUpstream]) -> str:
    models = "\n".join(
        f"""
[[models]]
id = "{name}"
backend = "openai_http"
hidden = true
[models.options]
upstreams = ["{fake.base_url}"]
model = "fake"
max_retries = 0
"""
        for name, fake in upstreams.items()
    )
    return f"""
[server]
log_format = "json"
{models}
[[routes]]
id = "smol"
[routes.experiment]
name = "{EXPERIMENT}"
unit = "user"
salt = "records"
variants = [
  {{ name = "control", model = "a", weight = 50 }},
  {{ name = "treatment", model = "b", weight = 50 }},
]

[store]
url = "{store_url}"
"""


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, FakeUpstream]]:
    fakes = {"a": FakeUpstream().start(), "b": FakeUpstream().start()}
    try:
        yield fakes
    finally:
        for fake in fakes.values():
            fake.stop()


def send(gateway: GatewayProcess, user: str, stream: bool = False) -> tuple[str, str]:
    """One completion; its request id and variant."""
    body: dict[str, Any] = {"model": "smol", "prompt": "hi", "max_tokens": 4, "user": user}
    if stream:
        body["stream"] = True
    r = httpx.post(f"{gateway.base_url}/v1/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    if stream:
        assert r.text.rstrip().endswith("data: [DONE]")
    return r.headers["x-request-id"], r.headers["x-gateway-variant"]


def feedback(gateway: GatewayProcess, request_id: str, metric: str, value: Any) -> int:
    payload = {"request_id": request_id, "metric": metric, "value": value}
    return httpx.post(f"{gateway.base_url}/v1/feedback", json=payload, timeout=30).status_code


def stored(store: Callable[[], RecordStore], what: str = "records") -> list[Any]:
    async def read() -> list[Any]:
        s = store()
        try:
            return await getattr(s, what)(EXPERIMENT, None)
        finally:
            await s.aclose()

    return asyncio.run(read())


def report(gateway: GatewayProcess) -> dict[str, Any]:
    """The experiment's report as this gateway computes it from the store."""
    r = httpx.get(f"{gateway.base_url}/v1/experiments/{EXPERIMENT}/report", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def per_variant(data: dict[str, Any]) -> dict[str, int]:
    return {row["name"]: row["n"] for row in data["variants"]}


def poll(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


def dropped(gateway: GatewayProcess) -> float:
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gateway_records_dropped_total"
    )


def test_sqlite_counts_per_variant_and_feedback(
    tmp_path: Path, upstreams: dict[str, FakeUpstream]
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(config("sqlite:///data/gateway.db", upstreams))  # relative to the config
    sent: dict[str, str] = {}
    posted: dict[tuple[str, str], Any] = {}
    with GatewayProcess(path, tmp_path / "gw.log") as gateway:
        for i in range(30):
            rid, variant = send(gateway, f"user-{i}", stream=i % 3 == 0)
            sent[rid] = variant
            if i % 4 == 0:  # posted at once: the gateway writes the record first
                assert feedback(gateway, rid, "accepted", i % 8 == 0) == 200
                posted[(rid, "accepted")] = i % 8 == 0
            if i % 5 == 0:
                assert feedback(gateway, rid, "score", i / 10) == 200
                posted[(rid, "score")] = i / 10
        assert feedback(gateway, "req_unknown", "accepted", True) == 404
        data = report(gateway)
    assert data["total"] == 30
    assert per_variant(data) == dict(Counter(sent.values()))
    accepted = {k[0]: v for k, v in posted.items() if k[1] == "accepted"}
    for row in data["variants"]:
        mine = [v for rid, v in accepted.items() if sent[rid] == row["name"]]
        assert row["feedback"]["accepted"]["n"] == len(mine)
        assert row["feedback"]["accepted"]["count"] == sum(mine)
    db = tmp_path / "data" / "gateway.db"
    records = stored(lambda: SQLiteStore(db))
    assert {r.request_id: r.variant for r in records} == sent
    assert Counter(r.variant for r in records) == Counter(sent.values())
    assert set(Counter(sent.values())) == {"control", "treatment"}
    assert sum(r.stream for r in records) == 10
    got = stored(lambda: SQLiteStore(db), "feedback")
    assert {(f.request_id, f.metric): f.value for f in got} == posted


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries missing (`.ci/dev.py test` installs them)")
    folder = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    cluster = PgCluster(folder).init().start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):  # stopped already when the test failed then
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_two_replicas_share_postgres_and_survive_its_outage(
    tmp_path: Path, upstreams: dict[str, FakeUpstream], pg: PgCluster
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(config(pg.url, upstreams))
    replicas = [GatewayProcess(path, tmp_path / f"gw{i}.log") for i in range(2)]
    for gateway in replicas:
        gateway.start()
    try:
        sent: dict[str, str] = {}
        for i in range(40):  # split across the replicas, as a load balancer would
            rid, variant = send(replicas[i % 2], f"user-{i}", stream=i % 4 == 1)
            sent[rid] = variant
        store = lambda: PostgresStore(pg.url)  # noqa: E731
        poll(lambda: len(stored(store)) == 40)
        records = stored(store)
        assert {r.request_id: r.variant for r in records} == sent
        # feedback through the other replica than the one that served the request
        posted = {rid: n % 2 == 0 for n, rid in enumerate(list(sent)[:10])}
        for n, (rid, value) in enumerate(posted.items()):
            assert feedback(replicas[(n + 1) % 2], rid, "accepted", value) == 200
        got = stored(store, "feedback")
        assert {f.request_id: f.value for f in got} == posted
        for gateway in replicas:  # either replica's report counts both replicas' requests
            data = report(gateway)
            assert data["total"] == 40
            assert per_variant(data) == dict(Counter(sent.values()))
            assert sum(r["feedback"]["accepted"]["n"] for r in data["variants"]) == 10

        pg.stop()  # the store goes down mid-run
        during = [send(replicas[i % 2], f"down-{i}")[0] for i in range(10)]
        assert feedback(replicas[0], during[0], "accepted", True) == 503
        for gateway in replicas:  # each counts its own five
            poll(lambda g=gateway: dropped(g) == 5)
        pg.start()  # back: writes resume
        after: dict[str, str] = {}
        for i in range(10):
            rid, variant = send(replicas[i % 2], f"back-{i}")
            after[rid] = variant
        poll(lambda: len(stored(store)) == 50)
        final = {r.request_id: r.variant for r in stored(store)}
        assert final == {**sent, **after}
        assert not set(during) & set(final)
        assert all(dropped(g) == 5 for g in replicas)
    finally:
        for gateway in replicas:
            gateway.stop()
