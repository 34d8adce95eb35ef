"""Probe replicas with `GET /v1/models`: every `interval` seconds for healthy ones (so a
dead idle replica is found before a client hits it), and as soon as an ejected one's
cooldown ends (the only way back into rotation)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import structlog

from backends.openai_http.replicas import Replica, ReplicaPool

log = structlog.get_logger("backends.openai_http")
TICK = 0.5  # longest sleep, so a fresh ejection's cooldown is noticed promptly


class HealthProber:
    def __init__(
        self,
        pool: ReplicaPool,
        client: httpx.AsyncClient,
        interval: float,
        timeout: float,
        headers: dict[str, str],
    ) -> None:
        self.pool = pool
        self.client = client
        self.interval = interval
        self.timeout = timeout
        self.headers = headers
        self._task: asyncio.Task[None] | None = None

    async def probe(self, replica: Replica) -> str | None:
        """None when the replica answers `GET /models` with a 2xx, else the reason. Only
        the status is read, within `timeout` in all: a replica that trickles its headers
        or sends an endless body can neither stall the prober nor fill its memory."""
        try:
            async with asyncio.timeout(self.timeout):
                async with self.client.stream(
                    "GET",
                    f"{replica.url}/models",
                    headers={**self.headers, **replica.headers},
                    timeout=self.timeout,
                ) as response:
                    status = response.status_code
        except TimeoutError:
            return f"probe timed out after {self.timeout:g} s"
        except httpx.HTTPError as exc:
            return f"probe failed: {type(exc).__name__}"
        if 200 <= status < 300:
            return None
        return f"probe answered HTTP {status}"

    async def check(self, replicas: list[Replica]) -> None:
        results = await asyncio.gather(*(self.probe(r) for r in replicas))
        for replica, error in zip(replicas, results, strict=True):
            if error is None:
                self.pool.probe_succeeded(replica)
            elif replica.state == "healthy" and replica.requests:
                # A replica that has served traffic may just be busy (llama-cpp-python's
                # server answers nothing while it generates): a failed probe counts like
                # a failed request instead of ejecting it outright.
                self.pool.failed(replica, error)
            else:
                self.pool.eject(replica, error)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="openai_http-prober")

    async def _run(self) -> None:
        next_active = time.monotonic() + self.interval
        while True:
            now = time.monotonic()
            wake = [now + TICK]
            if self.interval > 0:
                wake.append(next_active)
            cooled = self.pool.next_probe_at()
            if cooled is not None:
                wake.append(cooled)
            await asyncio.sleep(max(0.0, min(wake) - now))
            now = time.monotonic()
            due = self.pool.due_for_probe(now)
            if self.interval > 0 and now >= next_active:
                next_active = now + self.interval
                due += [r for r in self.pool.replicas if r.state == "healthy"]
            if due:
                try:
                    await self.check(due)
                except Exception:  # the prober must outlive any surprise
                    log.exception("health probe failed")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
