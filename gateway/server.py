"""Run the app under uvicorn with the gateway's connection limits and its shutdown.

Shutdown, at the first SIGTERM or SIGINT: stop accepting connections, close idle
ones, let requests in flight finish for up to `shutdown_grace_seconds`, then end what
is left (`Drain.expire()`: 503 envelopes and SSE `error` events, see gateway/drain.py),
give those a few seconds to be written, cancel anything still running, and run the
app's lifespan shutdown (models freed). A second SIGTERM or SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from types import FrameType
from typing import Any

import structlog
import uvicorn

from gateway.config import ServerSettings
from gateway.drain import Drain
from gateway.protocol import EdgeLimits, protocol_class

log = structlog.get_logger("gateway.server")
FD_RESERVE = 64  # descriptors kept for model files, upstream connections, logs
FINAL_WRITE_SECONDS = 5.0  # after the grace period: time to write the 503s and error events


def connection_limit(wanted: int) -> int:
    """`wanted`, or less if the process may not open that many descriptors: raises the
    soft RLIMIT_NOFILE toward the hard one first."""
    try:
        import resource
    except ImportError:  # not on Unix
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    limit = max(1, soft - FD_RESERVE)
    log.warning(
        "max_connections lowered to fit the descriptor limit",
        max_connections=wanted,
        effective=limit,
        rlimit_nofile=soft,
    )
    return limit


class GatewayServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        drain: Drain,
        grace_seconds: float,
        freeze_heap: bool = False,
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.grace_seconds = grace_seconds
        self.freeze_heap = freeze_heap

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.freeze_heap:
            # What is alive once the server listens (modules, routes, config) lives as
            # long as the process. Frozen, the collector's full passes skip it: such a
            # pass holds the GIL for its whole walk, so a request that allocates many
            # objects at once (a body of 100,000 messages, parsed off the loop) would
            # otherwise set off a walk of the whole startup heap and pause every
            # request for it. Only for a process of its own (`gateway serve`).
            gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            # The second signal: the operator does not want to wait.
            log.warning("second signal: exiting now", signal=signal.Signals(sig).name)
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):
                    handler.flush()
            os._exit(1)
        log.info(
            "shutdown requested",
            signal=signal.Signals(sig).name,
            grace_seconds=self.grace_seconds,
        )
        self.drain.begin()
        self.should_exit = True

    async def shutdown(self, sockets: Any = None) -> None:
        state = self.server_state
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(state.connections):
            connection.shutdown()
        self.drain.begin()
        started = time.monotonic()
        if state.tasks:
            log.info(
                "waiting for requests in flight",
                requests=len(state.tasks),
                grace_seconds=self.grace_seconds,
            )
        if not await self._wait_idle(self.grace_seconds):
            log.warning(
                "shutdown grace period over: ending the requests still in flight",
                requests=len(state.tasks),
                waited_seconds=round(time.monotonic() - started, 1),
            )
            self.drain.expire()
            if not await self._wait_idle(FINAL_WRITE_SECONDS):
                log.error("cancelling requests that did not end", requests=len(state.tasks))
                for task in list(state.tasks):
                    task.cancel()
                await self._wait_idle(1.0)
        for connection in list(state.connections):
            with contextlib.suppress(Exception):
                connection.transport.close()
        await self.lifespan.shutdown()
        log.info("shutdown complete", seconds=round(time.monotonic() - started, 1))

    async def _wait_idle(self, seconds: float) -> bool:
        """Wait until no request task runs (True), or `seconds` pass (False)."""
        deadline = time.monotonic() + seconds
        while self.server_state.tasks:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True


def build_server(
    app: Any, settings: ServerSettings, host: str, port: int, freeze_heap: bool = False
) -> GatewayServer:
    """The uvicorn server for `app` (made by `create_app`, whose `state.drain` it uses);
    `freeze_heap` when the process is the server's alone (see `GatewayServer.startup`)."""
    limits = EdgeLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        max_connections=connection_limit(settings.max_connections),
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(limits),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]
    )
    drain = getattr(app.state, "drain", None) or Drain()
    return GatewayServer(config, drain, settings.shutdown_grace_seconds, freeze_heap)
