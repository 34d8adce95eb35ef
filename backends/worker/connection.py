"""The parent's end of one worker process (one incarnation): spawning it, sending
messages, and pumping what it says to the waiting sequences and calls. When the worker
dies its socket closes at once, and every waiter is told (`LOST`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
import time
from typing import Any

import structlog

from backends.base import Health
from backends.worker import wire

log = structlog.get_logger("backends.worker")
LOST = "lost"  # put in a sequence's queue when the worker died under it


class WorkerLost(Exception):
    """The worker process ended (or stopped answering) before it answered."""


class Connection:
    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.proc = proc
        self.writer = writer
        self.sequences: dict[int, asyncio.Queue[tuple[str, Any]]] = {}
        self.calls: dict[int, asyncio.Future[Any]] = {}
        self.loaded: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.lost = asyncio.Event()
        self.last_beat = time.monotonic()
        self.health: Health | None = None
        self.stats: dict[str, Any] = {}
        self.ids = itertools.count(1)
        self.pump = asyncio.create_task(self._pump(reader))

    @classmethod
    async def spawn(cls, heartbeat_interval: float) -> Connection:
        parent, child = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "backends.worker",
                str(child.fileno()),
                str(os.getpid()),
                str(heartbeat_interval),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        return cls(proc, reader, writer)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return not self.lost.is_set()

    def send(self, kind: str, ident: int, payload: Any = None) -> None:
        if self.alive and not self.writer.is_closing():
            self.writer.write(wire.pack(kind, ident, payload))

    async def call(self, method: str, *args: Any) -> Any:
        ident = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.calls[ident] = future
        try:
            self.send(wire.CALL, ident, (method, args))
            if not self.alive:
                raise WorkerLost
            return await future
        finally:
            self.calls.pop(ident, None)

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, ident, payload = await wire.read_message(reader)
                self._dispatch(kind, ident, payload)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the worker's end closed: it exited or was killed
        except Exception:
            log.exception("unreadable message from a worker; stopping it", pid=self.pid)
            self.kill()
        finally:
            self._lose()

    def _dispatch(self, kind: str, ident: int, payload: Any) -> None:
        if kind == wire.HEARTBEAT:
            self.last_beat = time.monotonic()
            self.health, self.stats = payload
        elif kind in (wire.EVENT, wire.DONE) or (kind == wire.ERROR and ident in self.sequences):
            queue = self.sequences.get(ident)
            if queue is not None:
                queue.put_nowait((kind, payload))
        elif kind in (wire.RESULT, wire.ERROR) and ident in self.calls:
            future = self.calls[ident]
            if not future.done():
                if kind == wire.RESULT:
                    future.set_result(payload)
                else:
                    future.set_exception(wire.decode_error(payload))
        elif kind == wire.LOADED and not self.loaded.done():
            self.loaded.set_result(payload)
        elif kind == wire.ERROR and ident == 0 and not self.loaded.done():
            self.loaded.set_exception(wire.decode_error(payload))

    def _lose(self) -> None:
        self.lost.set()
        for queue in self.sequences.values():
            queue.put_nowait((LOST, None))
        for future in self.calls.values():
            if not future.done():
                future.set_exception(WorkerLost())
        if not self.loaded.done():
            self.loaded.set_exception(WorkerLost())
            self.loaded.exception()  # retrieved: nobody may be waiting any more
        with contextlib.suppress(Exception):
            self.writer.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)

    async def close(self, timeout: float) -> None:
        """Ask the worker to close its backend and exit; kill it if it does not."""
        self.send(wire.CLOSE, 0)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
        await self.pump


def describe_exit(returncode: int | None) -> str | None:
    """`SIGSEGV` for a signal, `exit 3` for an exit code."""
    if returncode is None:
        return None
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"
