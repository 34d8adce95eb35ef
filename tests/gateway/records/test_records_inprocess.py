"""The record per request, in process over scripted backends and a real SQLite file:
one per request of an experiment (streams, errors and cancellations included, with
their tokens), none for other requests unless `record_all`; the unit is stored only
as a hash; a slow or failing store never blocks or fails a request, its drops are
counted in /metrics, and writes resume when it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from backends.base import Capabilities
from gateway.records import FeedbackRecord, RequestRecord
from gateway.records.config import StoreSettings
from gateway.records.sqlite import SQLiteStore
from gateway.records.writer import RecordWriter
from gateway.routing import Shadow
from tests.gateway.records.support import stored_app
from tests.gateway.routing.support import ab_route, scrape, total
from tests.support.inprocess import Script, ScriptedBackend, ThreadedServer, asgi_client
from tests.support.server import free_port

pytestmark = pytest.mark.anyio
CAPS = Capabilities(chat_template=True)


def backends() -> list[ScriptedBackend]:
    return [
        ScriptedBackend("local", "a b c", capabilities=CAPS),
        ScriptedBackend("remote", "a b c d e", capabilities=CAPS),
        ScriptedBackend("spare", "a b c", capabilities=CAPS),
    ]


def body(**kw: object) -> dict[str, object]:
    return {"model": "smol", "prompt": "hi", "max_tokens": 8, "temperature": 0, **kw}


async def settle(store: SQLiteStore, n: int) -> list[RequestRecord]:
    """The experiment's records once `n` are stored, within a deadline."""
    deadline = time.monotonic() + 10
    while True:
        got = await store.records("local-vs-remote", None)
        if len(got) >= n:
            return got
        assert time.monotonic() < deadline, f"{len(got)} records stored, expected {n}"
        await asyncio.sleep(0.02)


async def test_one_record_per_experiment_request(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/g.db"
    app = stored_app(backends(), [ab_route()], StoreSettings(url), hidden=("local", "remote"))
    control, treatment = {"x-gateway-variant": "control"}, {"x-gateway-variant": "treatment"}
    ids: list[str] = []
    async with asgi_client(app) as client:
        for _ in range(3):
            r = await client.post("/v1/completions", json=body(user="alice"), headers=control)
            ids.append(r.headers["x-request-id"])
        stream = body(stream=True, stream_options={"include_usage": True})
        for _ in range(2):
            r = await client.post("/v1/completions", json=stream, headers=treatment)
            assert r.is_success
            ids.append(r.headers["x-request-id"])
        r = await client.post("/v1/completions", json=body())  # no user: assigned per request
        ids.append(r.headers["x-request-id"])
        await client.post("/v1/completions", json=body(model="spare"))  # a plain model
        await client.post("/v1/completions", json=body(max_tokens=-1))  # 400 before routing
        store = SQLiteStore(tmp_path / "g.db")
        records = await settle(store, 6)
        await asyncio.sleep(0)
        samples = await scrape(client)
    assert [r.request_id for r in records] == ids
    assert [r.variant for r in records[:5]] == ["control"] * 3 + ["treatment"] * 2
    first = records[0]
    assert first.route == "smol" and first.served_by == "local" and first.operation == "completion"
    assert first.status == 200 and not first.stream and not first.cancelled
    assert first.completion_tokens == 3 and first.prompt_tokens and first.total_ms > 0
    assert first.unit_hash and len(first.unit_hash) == 64 and "alice" not in first.unit_hash
    assert len({r.unit_hash for r in records[:3]}) == 1 and not first.unit_missing
    assert records[3].stream and records[3].completion_tokens == 5 and records[3].ttft_ms
    assert records[5].unit_missing and records[5].unit_hash is None
    assert all(r.time <= time.time() and not r.fell_back for r in records)
    assert total(samples, "gateway_records_written_total") == 6
    assert total(samples, "gateway_records_dropped_total") == 0
    await store.aclose()


async def test_record_all_records_plain_models_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/g.db"
    app = stored_app(backends(), [ab_route()], StoreSettings(url, record_all=True))
    async with asgi_client(app) as client:
        r = await client.post("/v1/completions", json=body(model="spare"))
        chat = {"model": "spare", "messages": [{"role": "user", "content": "x"}]}
        c = await client.post("/v1/chat/completions", json=chat)
        await client.get("/v1/models")  # not a generation: never recorded
        deadline = time.monotonic() + 10
        while total(await scrape(client), "gateway_records_written_total") < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    store = SQLiteStore(tmp_path / "g.db")
    sql = "SELECT request_id, route, operation, experiment FROM requests ORDER BY id"
    rows = await store._run(lambda db: db.execute(sql).fetchall())
    assert rows == [
        (r.headers["x-request-id"], "spare", "completion", None),
        (c.headers["x-request-id"], "spare", "chat", None),
    ]
    await store.aclose()


class StalledStore(SQLiteStore):
    """A real SQLite store whose writes wait until `release` (a store that is slow or
    down), or fail while `failing` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = asyncio.Event()
        self.failing = False

    async def write(self, records: Sequence[RequestRecord]) -> None:
        if self.failing:
            raise ConnectionError("store down")
        await self.release.wait()
        await super().write(records)


async def test_a_stalled_store_drops_and_counts_never_blocking(tmp_path: Path) -> None:
    settings = StoreSettings("sqlite:///unused.db", queue_size=2, batch_size=1)
    app = stored_app(backends(), [ab_route()], settings, hidden=("local", "remote"))
    store = StalledStore(tmp_path / "g.db")
    async with asgi_client(app) as client:
        writer: RecordWriter = app.state.records
        writer.store = store
        for i in range(6):  # one taken by the stalled write, two queued, three dropped
            r = await client.post("/v1/completions", json=body(user=f"u{i}"))
            assert r.status_code == 200
        samples = await scrape(client)
        assert total(samples, "gateway_records_dropped_total", reason="queue_full") == 3
        store.release.set()  # back: what was queued is written
        assert await writer.wait_idle(10)
        assert len(await store.records("local-vs-remote", None)) == 3
        store.failing = True  # down: failed batches are dropped and counted
        for i in range(2):
            assert (await client.post("/v1/completions", json=body(user=f"v{i}"))).is_success
        assert await writer.wait_idle(10)
        samples = await scrape(client)
        assert total(samples, "gateway_records_dropped_total", reason="store_error") == 2
        store.failing = False  # back again: writes resume
        assert (await client.post("/v1/completions", json=body(user="w"))).is_success
        assert await writer.wait_idle(10)
        assert len(await store.records("local-vs-remote", None)) == 4
        samples = await scrape(client)
    assert total(samples, "gateway_records_written_total") == 4
    assert await store.put_feedback(FeedbackRecord("nope", "m", 1.0, 0.0)) is False
    await store.aclose()


async def test_a_cancelled_stream_is_recorded_with_its_tokens_so_far(tmp_path: Path) -> None:
    endless = ScriptedBackend(
        "local", capabilities=CAPS, script=lambda r: Script(("a", " b", " c"), block_after=2)
    )
    models = [endless, *backends()[1:]]
    url = f"sqlite:///{tmp_path}/g.db"
    app = stored_app(models, [ab_route()], StoreSettings(url), hidden=("local", "remote"))
    with ThreadedServer(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            async with client.stream(
                "POST",
                "/v1/completions",
                json=body(stream=True, user="carol"),
                headers={"x-gateway-variant": "control"},
            ) as response:
                rid = response.headers["x-request-id"]
                seen = ""
                async for text in response.aiter_text():
                    seen += text
                    if seen.count("data: ") >= 2:
                        break
            store = SQLiteStore(tmp_path / "g.db")
            [got] = await settle(store, 1)
    assert got.request_id == rid and got.cancelled and got.status == 499
    assert got.stream and got.variant == "control" and got.completion_tokens == 2
    assert got.error_type is None and got.ttft_ms is not None
    await store.aclose()


async def test_the_shadow_comparison_lands_in_the_record(tmp_path: Path) -> None:
    """The comparison ends after the request; the writer attaches it to the record,
    whether it reaches the queue before or after it (written already: an UPDATE)."""
    models = [*backends()[:2], ScriptedBackend("spare", "a b x y", capabilities=CAPS)]
    url = f"sqlite:///{tmp_path}/g.db"
    route = ab_route(shadow=Shadow("spare", 1.0, 4))
    app = stored_app(models, [route], StoreSettings(url), hidden=("local", "remote"))
    store = SQLiteStore(tmp_path / "g.db")
    async with asgi_client(app) as client:
        ids = []
        for i in range(4):
            headers = {"x-gateway-variant": "control"}
            r = await client.post("/v1/completions", json=body(user=f"s{i}"), headers=headers)
            ids.append(r.headers["x-request-id"])
        deadline = time.monotonic() + 10
        while True:
            records = await store.records("local-vs-remote", None)
            if len(records) == 4 and all(r.shadow for r in records):
                break
            assert time.monotonic() < deadline, [r.shadow for r in records]
            await asyncio.sleep(0.02)
    assert [r.request_id for r in records] == ids
    for r in records:
        assert r.shadow is not None
        assert r.shadow["model"] == "spare" and r.shadow["result"] == "mismatch"
        assert r.shadow["exact_match"] is False and r.shadow["greedy"] is True
        assert r.shadow["primary_tokens"] == 3 and r.shadow["shadow_tokens"] == 4
    await store.aclose()


async def test_a_postgres_store_down_at_startup_only_drops(tmp_path: Path) -> None:
    """Nothing listens on the store's port: the app starts, requests succeed, each
    record is counted as dropped, feedback is a 503."""
    url = f"postgresql://gateway@127.0.0.1:{free_port()}/postgres"
    settings = StoreSettings(url, write_timeout_seconds=5)
    app = stored_app(backends(), [ab_route()], settings, hidden=("local", "remote"))
    async with asgi_client(app) as client:
        for i in range(3):
            assert (await client.post("/v1/completions", json=body(user=f"p{i}"))).is_success
        writer: RecordWriter = app.state.records
        assert await writer.wait_idle(30)
        samples = await scrape(client)
        payload = {"request_id": "r", "metric": "m", "value": 1}
        assert (await client.post("/v1/feedback", json=payload)).status_code == 503
    assert total(samples, "gateway_records_dropped_total", reason="store_error") == 3
