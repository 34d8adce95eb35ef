"""Records go to the store off the request path: the request end offers its record to a
bounded queue (never waiting), an app-owned task writes them in batches. When the store
is slow or down the queue fills and records are dropped and counted
(`gateway_records_dropped_total{reason}`), never blocking or failing a request."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from gateway.records.config import StoreSettings
from gateway.records.model import RecordStore, RequestRecord

log = structlog.get_logger("gateway.records")
SHADOW_TRIES = 3  # batches a shadow comparison waits for its record before it is let go
MAX_PENDING_SHADOWS = 1000


@dataclass(frozen=True, slots=True)
class ShadowComparison:
    """A shadow's comparison with its primary, which ends after the request (and may
    reach the queue before or after the request's record)."""

    request_id: str
    comparison: dict[str, Any]


class RecordWriter:
    def __init__(
        self, store: RecordStore, settings: StoreSettings, registry: CollectorRegistry
    ) -> None:
        self.store = store
        self.settings = settings
        self._queue: asyncio.Queue[RequestRecord | ShadowComparison] = asyncio.Queue(
            settings.queue_size
        )
        self._shadows: dict[str, tuple[dict[str, Any], int]] = {}  # waiting for their record
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._idle = asyncio.Event()
        self.dropped = Counter(
            "gateway_records_dropped",
            "Experiment records not stored: queue_full (the store is slower than traffic) "
            "or store_error (a batch failed or timed out)",
            ("reason",), registry=registry,
        )
        self.written = Counter(
            "gateway_records_written", "Experiment records stored", registry=registry
        )
        for reason in ("queue_full", "store_error"):
            self.dropped.labels(reason)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def offer(self, record: RequestRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped.labels("queue_full").inc()

    def report_shadow(self, comparison: dict[str, Any]) -> None:
        """The ShadowRunner's report: the comparison for the request whose context the
        shadow task was started in (its request id is bound to the log context)."""
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if isinstance(request_id, str):
            with contextlib.suppress(asyncio.QueueFull):  # the record is dropped then too
                self._queue.put_nowait(ShadowComparison(request_id, comparison))

    async def _loop(self) -> None:
        while True:
            if self._queue.empty():
                self._idle.set()
            batch = [await self._queue.get()]
            self._idle.clear()
            while len(batch) < self.settings.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: list[RequestRecord | ShadowComparison]) -> None:
        for item in batch:
            if isinstance(item, ShadowComparison) and len(self._shadows) < MAX_PENDING_SHADOWS:
                self._shadows[item.request_id] = (item.comparison, 0)
        records = []
        for item in batch:
            if isinstance(item, RequestRecord):
                pending = self._shadows.pop(item.request_id, None)
                records.append(item if pending is None else replace(item, shadow=pending[0]))
        try:
            async with asyncio.timeout(self.settings.write_timeout_seconds):
                if records:
                    await self.store.write(records)
                with contextlib.suppress(Exception):  # a comparison is not worth a record
                    await self._attach_shadows()
        except Exception as exc:
            self.dropped.labels("store_error").inc(len(records))
            if not self._failing:  # one warning per outage, not one per batch
                log.warning(
                    "record store write failed; dropping records until it is back",
                    error_type=type(exc).__name__,
                    dropped=len(records),
                )
            self._failing = True
            return
        self.written.inc(len(records))
        if self._failing:
            log.info("record store writes resumed")
            self._failing = False

    async def _attach_shadows(self) -> None:
        """Comparisons whose record was written in an earlier batch; the others wait a
        few batches for their record (it may still be in flight), then go."""
        if not self._shadows:
            return
        found = await self.store.attach_shadow({k: v[0] for k, v in self._shadows.items()})
        self._shadows = {
            k: (comparison, tries + 1)
            for k, (comparison, tries) in self._shadows.items()
            if k not in found and tries + 1 < SHADOW_TRIES
        }

    async def wait_idle(self, timeout: float) -> bool:
        """Until every record offered so far was written or dropped (at shutdown;
        tests). False when `timeout` passed first."""
        await asyncio.sleep(0)  # let the loop take what was just offered
        try:
            async with asyncio.timeout(timeout):
                while not (self._idle.is_set() and self._queue.empty()):
                    await self._idle.wait()
                    await asyncio.sleep(0)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Writes what is queued (within one write timeout), then stops."""
        if self._task is not None:
            await self.wait_idle(self.settings.write_timeout_seconds)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.store.aclose()
