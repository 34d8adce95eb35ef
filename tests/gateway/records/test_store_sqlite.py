"""The SQLite store against a real database file: records round-trip, experiments are
summarised per variant, `since` filters, feedback overwrites per (request, metric) and
refuses unknown ids, the schema version is recorded once, retention deletes old rows."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.records import FeedbackRecord
from gateway.records.config import StoreSettings, sqlite_path
from gateway.records.sqlite import SCHEMA, SQLiteStore
from tests.gateway.records.support import record

pytestmark = pytest.mark.anyio


async def test_records_round_trip_and_summaries(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "sub" / "g.db")
    shadow = {"exact_match": False, "primary_tokens": 5}
    written = [
        record("a", time=10.0),
        record("b", time=20.0, variant="treatment", stream=True, shadow=shadow),
        record("c", time=30.0, variant="treatment", cancelled=True, status=499, ttft_ms=None),
        record("d", time=40.0, experiment=None, variant=None),  # record_all: no experiment
        record("e", time=50.0, experiment="other", route="other-route"),
    ]
    await store.write(written)
    assert await store.records("exp", None) == written[:3]
    assert await store.records("exp", 20.0) == written[1:3]
    summaries = {s.name: s for s in await store.experiments()}
    assert set(summaries) == {"exp", "other"}
    exp = summaries["exp"]
    assert exp.variants == ("control", "treatment")
    assert dict(exp.counts) == {"control": 1, "treatment": 2}
    assert exp.total == 3 and exp.routes == ("smol",) and (exp.first, exp.last) == (10.0, 30.0)
    await store.aclose()
    db = sqlite3.connect(tmp_path / "sub" / "g.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_feedback_overwrites_and_refuses_unknown_ids(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    await store.write([record("a", time=10.0), record("b", time=20.0), record("x", experiment="z")])
    assert await store.put_feedback(FeedbackRecord("a", "accepted", True, 1.0))
    assert await store.put_feedback(FeedbackRecord("a", "score", 3.5, 2.0))
    assert await store.put_feedback(FeedbackRecord("a", "accepted", False, 3.0))  # overwrites
    assert await store.put_feedback(FeedbackRecord("b", "score", 1.0, 4.0))
    assert await store.put_feedback(FeedbackRecord("x", "score", 9.0, 5.0))  # another experiment
    assert not await store.put_feedback(FeedbackRecord("nobody", "accepted", True, 6.0))
    got = await store.feedback("exp", None)
    assert got == [
        FeedbackRecord("a", "score", 3.5, 2.0),
        FeedbackRecord("a", "accepted", False, 3.0),
        FeedbackRecord("b", "score", 1.0, 4.0),
    ]
    assert isinstance(got[1].value, bool) and isinstance(got[0].value, float)
    assert await store.feedback("exp", 15.0) == [FeedbackRecord("b", "score", 1.0, 4.0)]
    await store.aclose()


async def test_schema_version_is_created_once(tmp_path: Path) -> None:
    for _ in range(2):  # a restart finds the schema at its version and changes nothing
        store = SQLiteStore(tmp_path / "g.db")
        await store.open()
        assert store.version == len(SCHEMA)
        await store.aclose()
    db = sqlite3.connect(tmp_path / "g.db")
    assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1


async def test_retention_deletes_old_records_and_feedback(tmp_path: Path) -> None:
    now = time.time()
    before = SQLiteStore(tmp_path / "g.db")  # no retention yet
    await before.write([record("old", time=now - 3 * 86400), record("day", time=now - 3600)])
    assert await before.put_feedback(FeedbackRecord("old", "accepted", True, now - 3 * 86400))
    await before.aclose()
    store = SQLiteStore(tmp_path / "g.db", retention_days=1)
    await store.write([record("new", time=now)])
    assert [r.request_id for r in await store.records("exp", None)] == ["day", "new"]
    assert await store.feedback("exp", None) == []
    await store.aclose()


def test_sqlite_url_is_relative_to_the_config_file(tmp_path: Path) -> None:
    assert sqlite_path("sqlite:///data/g.db", tmp_path) == tmp_path / "data" / "g.db"
    assert sqlite_path("sqlite:////var/g.db", tmp_path) == Path("/var/g.db")
    assert StoreSettings("sqlite:///x.db").kind == "sqlite"
    assert StoreSettings("postgresql://h/db").kind == "postgresql"


def test_connections_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL answers SQLITE_BUSY at once (no busy handler) while
    another connection opens it: two replicas, or a replica and `gateway report`,
    starting together must both get their store."""
    for attempt in range(20):
        path = tmp_path / f"race-{attempt}.db"
        errors: list[BaseException] = []

        def open_store(path: Path = path, errors: list[BaseException] = errors) -> None:
            try:
                assert SQLiteStore(path).version >= 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
