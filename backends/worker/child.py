"""The worker process: builds the real backend from the entry-point registry and serves
it over the wire (`backends.worker.wire`) until the parent closes the socket or dies.

Run by the parent as `python -m backends.worker FD PARENT_PID HEARTBEAT_SECONDS`."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import structlog

from backends.base import Admission, Backend, Finished, ModelInfo
from backends.errors import BackendError
from backends.registry import load_backend_class
from backends.worker import wire

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the parent dies, however it dies (Linux); the closed
    socket is the second, portable watch."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def configure_logging(model_id: str) -> None:
    """One line per record as the gateway writes them (JSON unless stderr is a
    terminal), each naming the model and this worker's pid."""
    json_lines = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    structlog.contextvars.bind_contextvars(worker_model=model_id, worker_pid=os.getpid())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _snapshot(admission: Admission) -> tuple[list[int | None], list[float | None]]:
    return list(admission.prompt_tokens()), list(admission.queue_seconds())


class Worker:
    def __init__(self, writer: asyncio.StreamWriter, heartbeat: float) -> None:
        self.writer = writer
        self.heartbeat = heartbeat
        self.backend: Backend | None = None
        self.sequences: dict[int, asyncio.Task[None]] = {}
        self.calls: set[asyncio.Task[None]] = set()
        self.admissions: dict[int, Admission] = {}

    def send(self, kind: str, ident: int, payload: Any = None) -> None:
        self.writer.write(wire.pack(kind, ident, payload))

    async def beat(self) -> None:
        while True:
            try:
                if self.backend is None:
                    self.send(wire.HEARTBEAT, 0, (None, {}))
                else:
                    stats = dict(self.backend.stats())
                    self.send(wire.HEARTBEAT, 0, (self.backend.health(), stats))
            except Exception:  # stats that cannot cross: the beat itself must go on
                logging.getLogger("backends.worker").exception("heartbeat without stats")
                self.send(wire.HEARTBEAT, 0, (None, {}))
            await asyncio.sleep(self.heartbeat)

    async def load(self, payload: tuple[str, str, dict[str, Any], str]) -> None:
        name, model_id, options, base_dir = payload
        configure_logging(model_id)
        try:
            backend = load_backend_class(name).from_config(model_id, options, Path(base_dir))
            self.backend = backend
            await backend.load()
            info = backend.info()
            info = ModelInfo(info.id, info.backend, info.capabilities, dict(info.details))
            try:
                tokenizer: Any = backend.tokenizer_info()
            except Exception as exc:
                tokenizer = wire.encode_error(exc)
            self.send(wire.LOADED, 0, (info, backend.capabilities, tokenizer))
        except OSError as exc:
            err = BackendError(exc.strerror or type(exc).__name__)
            self.send(wire.ERROR, 0, wire.encode_error(err))
        except Exception as exc:
            self.send(wire.ERROR, 0, wire.encode_error(exc))

    async def generate(self, seq: int, payload: Any) -> None:
        request, admission_id, count = payload
        assert self.backend is not None
        try:
            if admission_id is None:  # a plain `generate`, outside any admission
                admission = Admission(self.backend)
            elif (admission := self.admissions.get(admission_id)) is None:
                admission = self.backend.admit(count)
                self.admissions[admission_id] = admission
            events = admission.generate(request)
            first = True
            try:
                async for event in events:
                    last = isinstance(event, Finished)
                    snap = _snapshot(admission) if first or last else None
                    self.send(wire.EVENT, seq, (event, snap))
                    first = False
                    await self.writer.drain()
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            self.send(wire.DONE, seq, _snapshot(admission))
        except asyncio.CancelledError:
            pass  # the parent closed this sequence: nothing more to say
        except Exception as exc:
            self.send(wire.ERROR, seq, wire.encode_error(exc))
        finally:
            self.sequences.pop(seq, None)

    async def call(self, ident: int, payload: tuple[str, tuple[Any, ...]]) -> None:
        method, args = payload
        assert self.backend is not None
        try:
            if method not in {"tokenize", "detokenize", "token_pieces"}:
                raise BackendError(f"unknown worker call {method!r}")
            result = await getattr(self.backend, method)(*args)
            self.send(wire.RESULT, ident, result)
        except Exception as exc:
            self.send(wire.ERROR, ident, wire.encode_error(exc))

    def spawn_call(self, ident: int, payload: Any) -> None:
        task = asyncio.create_task(self.call(ident, payload))
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    async def serve(self, reader: asyncio.StreamReader) -> None:
        beat = asyncio.create_task(self.beat())
        try:
            while True:
                try:
                    kind, ident, payload = await wire.read_message(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the parent is gone
                if kind == wire.LOAD:
                    await self.load(payload)
                elif kind == wire.GENERATE:
                    self.sequences[ident] = asyncio.create_task(self.generate(ident, payload))
                elif kind == wire.CANCEL:
                    task = self.sequences.get(ident)
                    if task is not None:
                        task.cancel()
                elif kind == wire.RELEASE:
                    admission = self.admissions.pop(ident, None)
                    if admission is not None:
                        admission.release()
                elif kind == wire.CALL:
                    self.spawn_call(ident, payload)
                elif kind == wire.CLOSE:
                    return
        finally:
            beat.cancel()
            for task in list(self.sequences.values()):
                task.cancel()
            if self.backend is not None:
                with contextlib.suppress(Exception):
                    await self.backend.aclose()


async def main_async(fd: int, heartbeat: float) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    await Worker(writer, heartbeat).serve(reader)
    with contextlib.suppress(Exception):
        await writer.drain()
        writer.close()


def main(argv: list[str]) -> int:
    fd, parent_pid, heartbeat = int(argv[0]), int(argv[1]), float(argv[2])
    die_with_parent(parent_pid)
    # The gateway shuts its workers down after its requests drain: a Ctrl-C or a SIGTERM
    # sent to the whole process group (systemd, a terminal) must not cut them short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.run(main_async(fd, heartbeat))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
