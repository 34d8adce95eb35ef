"""The SQLite record store (the default): stdlib sqlite3 in a worker thread, WAL mode,
one connection guarded by a lock. For one gateway process; replicas use PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway.records.model import ExperimentSummary, FeedbackRecord, RequestRecord
from gateway.records.schema import COLUMNS, feedback_from_row, from_row, migrations, to_row
from gateway.records.summary import summaries

T = TypeVar("T")
SCHEMA = migrations("REAL", "TEXT", "INTEGER PRIMARY KEY AUTOINCREMENT")
FEEDBACK_COLUMNS = "f.request_id, f.metric, f.value, f.is_bool, f.time"


def _use_wal(db: sqlite3.Connection, wait: float = 10.0) -> None:
    """Switch to WAL. SQLite answers SQLITE_BUSY at once, without its busy handler, when
    another connection is opening the same new file: retry until `wait` is over."""
    deadline = time.monotonic() + wait
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SQLiteStore:
    def __init__(self, path: Path, retention_days: float | None = None) -> None:
        self.path = path
        self.retention_days = retention_days
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._purged = 0.0

    @property
    def version(self) -> int:
        return self._call(lambda db: _version(db))

    async def open(self) -> None:
        await asyncio.to_thread(self._call, lambda db: None)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The busy timeout from the first statement on: another connection (a second
        # replica, `gateway report`) may hold a lock just now.
        db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10
        )
        _use_wal(db)
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        with db:
            db.execute("BEGIN IMMEDIATE")
            current = _version(db)
            for number, steps in enumerate(SCHEMA, start=1):
                if number > current:
                    for step in steps:
                        db.execute(step)
            if current < len(SCHEMA):
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version VALUES (?)", (len(SCHEMA),))
        return db

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._db is None:
                self._db = self._connect()
            return work(self._db)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._call, work)

    async def write(self, records: Sequence[RequestRecord]) -> None:
        rows = [to_row(r) for r in records]
        marks = ", ".join("?" for _ in COLUMNS)
        sql = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({marks})"

        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany(sql, rows)
            self._purge(db)

        await self._run(work)

    def _purge(self, db: sqlite3.Connection) -> None:
        """Retention, at most once a minute."""
        now = time.time()
        if self.retention_days is None or now - self._purged < 60:
            return
        self._purged = now
        cutoff = now - self.retention_days * 86400
        with db:
            db.execute("BEGIN")
            db.execute("DELETE FROM requests WHERE time < ?", (cutoff,))
            db.execute("DELETE FROM feedback WHERE time < ?", (cutoff,))

    async def attach_shadow(self, comparisons: Mapping[str, Mapping[str, Any]]) -> set[str]:
        def work(db: sqlite3.Connection) -> set[str]:
            found = set()
            with db:
                db.execute("BEGIN")
                for request_id, comparison in comparisons.items():
                    cur = db.execute(
                        "UPDATE requests SET shadow = ? WHERE request_id = ?",
                        (json.dumps(comparison, ensure_ascii=True), request_id),
                    )
                    if cur.rowcount:
                        found.add(request_id)
            return found

        return await self._run(work)

    async def put_feedback(self, fb: FeedbackRecord) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            with db:
                db.execute("BEGIN")
                known = db.execute(
                    "SELECT 1 FROM requests WHERE request_id = ? LIMIT 1", (fb.request_id,)
                ).fetchone()
                if known is None:
                    return False
                db.execute(
                    "INSERT INTO feedback (request_id, metric, value, is_bool, time) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id, metric) DO UPDATE SET "
                    "value = excluded.value, is_bool = excluded.is_bool, time = excluded.time",
                    (fb.request_id, fb.metric, float(fb.value), isinstance(fb.value, bool),
                     fb.time),
                )
                return True

        return await self._run(work)

    async def experiments(self) -> list[ExperimentSummary]:
        sql = (
            "SELECT experiment, variant, route, COUNT(*), MIN(time), MAX(time) FROM requests "
            "WHERE experiment IS NOT NULL GROUP BY experiment, variant, route"
        )
        rows = await self._run(lambda db: db.execute(sql).fetchall())
        return summaries(rows)

    async def records(self, experiment: str, since: float | None) -> list[RequestRecord]:
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM requests WHERE experiment = ? AND time >= ? "
            "ORDER BY time, id"
        )
        args = (experiment, since if since is not None else float("-inf"))
        rows = await self._run(lambda db: db.execute(sql, args).fetchall())
        return [from_row(row) for row in rows]

    async def feedback(self, experiment: str, since: float | None) -> list[FeedbackRecord]:
        sql = (
            f"SELECT {FEEDBACK_COLUMNS} FROM feedback f WHERE f.request_id IN "
            "(SELECT request_id FROM requests WHERE experiment = ? AND time >= ?) "
            "ORDER BY f.time"
        )
        args = (experiment, since if since is not None else float("-inf"))
        rows = await self._run(lambda db: db.execute(sql, args).fetchall())
        return [feedback_from_row(row) for row in rows]

    async def aclose(self) -> None:
        def work() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(work)


def _version(db: sqlite3.Connection) -> int:
    row: Any = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)
