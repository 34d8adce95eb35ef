"""The record writer with a real SQLite store: a shadow comparison reaches the record
whether it is reported before the record is offered (merged into it) or after it was
written (an UPDATE); one whose record never comes is let go after a few batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from gateway.records.config import StoreSettings
from gateway.records.sqlite import SQLiteStore
from gateway.records.writer import SHADOW_TRIES, RecordWriter
from tests.gateway.records.support import record

pytestmark = pytest.mark.anyio


def report(writer: RecordWriter, request_id: str, result: str) -> None:
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        writer.report_shadow({"model": "spare", "result": result})


async def test_shadow_before_and_after_its_record(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    writer = RecordWriter(store, StoreSettings("sqlite:///x.db"), CollectorRegistry())
    writer.start()
    report(writer, "early", "ok")  # before its record: waits for it
    assert await writer.wait_idle(10)
    writer.offer(record("early", time=1.0))
    writer.offer(record("late", time=2.0))
    assert await writer.wait_idle(10)
    report(writer, "late", "mismatch")  # after its record was written
    report(writer, "never", "ok")  # no record will come
    assert await writer.wait_idle(10)
    got = {r.request_id: r.shadow for r in await store.records("exp", None)}
    assert got == {
        "early": {"model": "spare", "result": "ok"},
        "late": {"model": "spare", "result": "mismatch"},
    }
    assert "never" in writer._shadows
    for i in range(SHADOW_TRIES):  # each batch tries it once more
        writer.offer(record(f"filler-{i}", time=3.0 + i))
        assert await writer.wait_idle(10)
    assert writer._shadows == {}
    await writer.aclose()


async def test_aclose_writes_what_is_queued(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    writer = RecordWriter(store, StoreSettings("sqlite:///x.db"), CollectorRegistry())
    writer.start()
    for i in range(50):
        writer.offer(record(f"r{i}", time=float(i)))
    await writer.aclose()  # at shutdown: written, not lost
    reopened = SQLiteStore(tmp_path / "g.db")
    assert len(await reopened.records("exp", None)) == 50
    await reopened.aclose()
