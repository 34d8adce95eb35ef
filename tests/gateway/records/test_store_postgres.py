"""The PostgreSQL store against a real server this test starts (its own cluster in a
temp folder): records round-trip, summaries, feedback overwrite and unknown ids, the
schema migrated once even by two stores starting together, and a server that goes
away and comes back: writes fail while it is down and resume after."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.records import FeedbackRecord
from gateway.records.postgres import SCHEMA, PostgresStore
from tests.gateway.records.support import record
from tests.support.postgres import PgCluster, postgres_bin

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        postgres_bin() is None,
        reason="PostgreSQL server binaries missing (`.ci/dev.py test` installs them)",
    ),
]


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    folder = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    cluster = PgCluster(folder).init().start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def fresh_database(pg: PgCluster, name: str) -> str:
    with psycopg.connect(pg.url, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}"')
        db.execute(f'CREATE DATABASE "{name}"')
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


async def test_round_trip_summaries_and_feedback(pg: PgCluster) -> None:
    store = PostgresStore(fresh_database(pg, "roundtrip"))
    shadow = {"exact_match": True}
    written = [
        record("a", time=10.0),
        record("b", time=20.0, variant="treatment", stream=True, shadow=shadow),
        record("c", time=30.0, variant="treatment", cancelled=True, status=499, ttft_ms=None),
        record("d", time=40.0, experiment=None, variant=None),
    ]
    await store.write(written)
    assert await store.records("exp", None) == written[:3]
    assert await store.records("exp", 20.0) == written[1:3]
    [summary] = await store.experiments()
    assert summary.name == "exp" and dict(summary.counts) == {"control": 1, "treatment": 2}
    assert await store.put_feedback(FeedbackRecord("a", "accepted", True, 1.0))
    assert await store.put_feedback(FeedbackRecord("a", "accepted", False, 2.0))
    assert await store.put_feedback(FeedbackRecord("b", "score", 2.5, 3.0))
    assert not await store.put_feedback(FeedbackRecord("zz", "accepted", True, 4.0))
    assert await store.feedback("exp", None) == [
        FeedbackRecord("a", "accepted", False, 2.0),
        FeedbackRecord("b", "score", 2.5, 3.0),
    ]
    await store.aclose()


async def test_replicas_starting_together_migrate_once(pg: PgCluster) -> None:
    url = fresh_database(pg, "migrate")
    stores = [PostgresStore(url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    assert [await s.version() for s in stores] == [len(SCHEMA)] * 4
    with psycopg.connect(url) as db:
        assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (1,)
    for s in stores:
        await s.aclose()


async def test_writes_fail_while_down_and_resume_after(pg: PgCluster) -> None:
    store = PostgresStore(fresh_database(pg, "outage"), connect_timeout=2)
    await store.write([record("before")])
    pg.stop()
    try:
        with pytest.raises(psycopg.OperationalError):
            await store.write([record("during")])
        with pytest.raises(psycopg.OperationalError):  # reconnecting fails too, quickly
            await store.write([record("during-2")])
    finally:
        pg.start()
    await store.write([record("after")])  # reconnected
    assert [r.request_id for r in await store.records("exp", None)] == ["before", "after"]
    await store.aclose()
