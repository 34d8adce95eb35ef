"""The PostgreSQL record store, for several gateway replicas sharing one database:
psycopg 3's async API, one connection per gateway guarded by a lock, reopened after a
failure (a store that was down is written to again once it is back). The schema is
created or migrated at connect under an advisory lock, so replicas starting together
do not race."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg

from gateway.records.model import ExperimentSummary, FeedbackRecord, RequestRecord
from gateway.records.schema import COLUMNS, feedback_from_row, from_row, migrations, to_row
from gateway.records.summary import summaries

T = TypeVar("T")
SCHEMA = migrations("DOUBLE PRECISION", "TEXT", "BIGSERIAL PRIMARY KEY")
MIGRATION_LOCK = 0x6A7E_3C0D  # pg_advisory_xact_lock key: one migrating replica at a time
FEEDBACK_COLUMNS = "f.request_id, f.metric, f.value, f.is_bool, f.time"


class PostgresStore:
    def __init__(
        self, url: str, retention_days: float | None = None, connect_timeout: float = 5.0
    ) -> None:
        self.url = url
        self.retention_days = retention_days
        self.connect_timeout = connect_timeout
        self._lock = asyncio.Lock()
        self._db: psycopg.AsyncConnection[Any] | None = None
        self._purged = 0.0

    async def open(self) -> None:
        await self._run(lambda db: _noop())

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        db = await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(1, int(self.connect_timeout)),
            client_encoding="utf8",  # text comes back as str whatever the database encoding
        )
        try:
            async with db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                )
                cur = await db.execute("SELECT MAX(version) FROM schema_version")
                row = await cur.fetchone()
                current = int(row[0] or 0) if row else 0
                for number, steps in enumerate(SCHEMA, start=1):
                    if number > current:
                        for step in steps:
                            await db.execute(step)  # type: ignore[arg-type]
                if current < len(SCHEMA):
                    await db.execute("DELETE FROM schema_version")
                    await db.execute("INSERT INTO schema_version VALUES (%s)", (len(SCHEMA),))
        except BaseException:
            await db.close()
            raise
        return db

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        async with self._lock:
            if self._db is None or self._db.closed:
                self._db = await self._connect()
            try:
                return await work(self._db)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                db, self._db = self._db, None  # reconnect on the next call
                await db.close()
                raise

    async def version(self) -> int:
        async def work(db: psycopg.AsyncConnection[Any]) -> int:
            cur = await db.execute("SELECT MAX(version) FROM schema_version")
            row = await cur.fetchone()
            return int(row[0] or 0) if row else 0

        return await self._run(work)

    async def write(self, records: Sequence[RequestRecord]) -> None:
        rows = [to_row(r) for r in records]
        marks = ", ".join("%s" for _ in COLUMNS)
        sql = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({marks})"

        async def work(db: psycopg.AsyncConnection[Any]) -> None:
            async with db.transaction(), db.cursor() as cur:
                await cur.executemany(sql, rows)  # type: ignore[arg-type]
            await self._purge(db)

        await self._run(work)

    async def _purge(self, db: psycopg.AsyncConnection[Any]) -> None:
        """Retention, at most once a minute per replica."""
        now = time.time()
        if self.retention_days is None or now - self._purged < 60:
            return
        self._purged = now
        cutoff = now - self.retention_days * 86400
        async with db.transaction():
            await db.execute("DELETE FROM requests WHERE time < %s", (cutoff,))
            await db.execute("DELETE FROM feedback WHERE time < %s", (cutoff,))

    async def attach_shadow(self, comparisons: Mapping[str, Mapping[str, Any]]) -> set[str]:
        async def work(db: psycopg.AsyncConnection[Any]) -> set[str]:
            found = set()
            async with db.transaction():
                for request_id, comparison in comparisons.items():
                    cur = await db.execute(
                        "UPDATE requests SET shadow = %s WHERE request_id = %s",
                        (json.dumps(comparison, ensure_ascii=True), request_id),
                    )
                    if cur.rowcount:
                        found.add(request_id)
            return found

        return await self._run(work)

    async def put_feedback(self, fb: FeedbackRecord) -> bool:
        async def work(db: psycopg.AsyncConnection[Any]) -> bool:
            async with db.transaction():
                cur = await db.execute(
                    "SELECT 1 FROM requests WHERE request_id = %s LIMIT 1", (fb.request_id,)
                )
                if await cur.fetchone() is None:
                    return False
                await db.execute(
                    "INSERT INTO feedback (request_id, metric, value, is_bool, time) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (request_id, metric) DO UPDATE SET "
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
        return summaries(await self._fetch(sql, ()))

    async def records(self, experiment: str, since: float | None) -> list[RequestRecord]:
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM requests WHERE experiment = %s AND time >= %s "
            "ORDER BY time, id"
        )
        args = (experiment, since if since is not None else float("-inf"))
        return [from_row(row) for row in await self._fetch(sql, args)]

    async def feedback(self, experiment: str, since: float | None) -> list[FeedbackRecord]:
        sql = (
            f"SELECT {FEEDBACK_COLUMNS} FROM feedback f WHERE f.request_id IN "
            "(SELECT request_id FROM requests WHERE experiment = %s AND time >= %s) "
            "ORDER BY f.time"
        )
        args = (experiment, since if since is not None else float("-inf"))
        return [feedback_from_row(row) for row in await self._fetch(sql, args)]

    async def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        async def work(db: psycopg.AsyncConnection[Any]) -> list[Any]:
            cur = await db.execute(sql, args)  # type: ignore[arg-type]
            return await cur.fetchall()

        return await self._run(work)

    async def aclose(self) -> None:
        async with self._lock:
            if self._db is not None:
                db, self._db = self._db, None
                await db.close()


async def _noop() -> None:
    return None
