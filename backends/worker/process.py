"""`ProcessBackend`: any backend, run in a supervised worker process behind the same
`Backend` contract. The gateway, routing and every other backend are unaware of it.

Supervision: the worker's death is noticed at once (its socket closes); its in-flight
sequences fail with a 503 `backend_crashed` (before their first event) or an error
that ends the stream; `health()` says `unavailable` until a new worker has loaded;
restarts follow `RestartPolicy`. A worker without a heartbeat for `heartbeat_timeout`
is killed (and so restarted). Startup: a clean load error (a missing file, a bad
option) fails the load as it would in-process; a worker that *dies* while loading does
not: the model stays unavailable, restarting with backoff, and the gateway serves its
other models."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import structlog

from backends.base import (
    Admission,
    Backend,
    Capabilities,
    GenerationEvent,
    GenerationRequest,
    Health,
    ModelInfo,
    TokenizerInfo,
)
from backends.errors import BackendError, ConfigError, UpstreamError
from backends.registry import load_backend_class
from backends.worker import wire
from backends.worker.connection import LOST, Connection, WorkerLost, describe_exit
from backends.worker.policy import RestartPolicy, WorkerOptions

log = structlog.get_logger("backends.worker")
WorkerState = Literal["starting", "ready", "restarting", "crashed", "failed", "closed"]


class ProcessAdmission(Admission):
    """The call's claim, made in the worker with its first sequence (an `Overloaded`
    there fails that sequence before its first event, as `admit` would)."""

    def __init__(self, backend: ProcessBackend, count: int, ident: int) -> None:
        super().__init__(backend)
        self.owner = backend
        self.count = count
        self.ident = ident
        self.conn = backend.conn
        self.snapshot: tuple[list[int | None], list[float | None]] = ([], [])

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        return self.owner.run_sequence(request, self)

    def release(self) -> None:
        if self.conn is not None:
            self.conn.send(wire.RELEASE, self.ident)

    def prompt_tokens(self) -> list[int | None]:
        return list(self.snapshot[0])

    def queue_seconds(self) -> list[float | None]:
        return list(self.snapshot[1])


class ProcessBackend(Backend):
    def __init__(
        self,
        backend_name: str,
        model_id: str,
        options: Mapping[str, Any],
        base_dir: Path,
        worker: WorkerOptions,
    ) -> None:
        self.name = backend_name
        self.model_id = model_id
        self.options = dict(options)
        self.base_dir = base_dir
        self.worker = worker
        self.policy = RestartPolicy(worker)
        self.conn: Connection | None = None
        self.state: WorkerState = "starting"
        self.reason: str | None = None
        self.restarts = 0
        self.last_exit: str | None = None
        self.next_attempt: float | None = None  # wall-clock time
        self.up_since: float | None = None
        self._info: ModelInfo | None = None
        self._capabilities = Capabilities()
        self._tokenizer: Any = None
        self._ids = itertools.count(1)
        self._supervisor: asyncio.Task[None] | None = None
        self._first_load: asyncio.Future[None] | None = None
        self._closing = False

    @classmethod
    def from_config(cls, model_id: str, options: Mapping[str, Any], base_dir: Path) -> Self:
        """`options`: {"backend": name, "options": {...}, "worker": {...}}. The wrapped
        backend validates its options here, in the gateway, so a bad key fails startup."""
        name = options.get("backend")
        if not isinstance(name, str):
            raise ConfigError("must name the backend to run in the worker", "backend")
        inner = dict(options.get("options", {}))
        load_backend_class(name).from_config(model_id, inner, base_dir)
        worker = WorkerOptions.parse(options.get("worker", {}))
        return cls(name, model_id, inner, base_dir, worker)

    # -- lifecycle ------------------------------------------------------------------

    async def load(self) -> None:
        self._first_load = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise())
        await asyncio.shield(self._first_load)

    async def _supervise(self) -> None:
        try:
            await self._restart_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # cannot start a worker at all (fork failed, ...)
            log.exception("worker supervision stopped", model=self.model_id)
            self.state, self.reason = "failed", f"cannot start its worker ({type(exc).__name__})"
            self._resolve_first(BackendError(self.reason))

    async def _restart_loop(self) -> None:
        while not self._closing:
            conn = await Connection.spawn(self.worker.heartbeat_interval)
            self.conn = conn
            watchdog = asyncio.create_task(self._watch(conn))
            try:
                await self._start(conn)
            except WorkerLost:
                why = None
            except Exception as exc:  # a clean load error from the worker
                if self._first_load is not None and not self._first_load.done():
                    self.state, self.reason = "failed", str(exc)
                    watchdog.cancel()
                    await conn.close(5)
                    self._resolve_first(exc)
                    return
                log.error("worker reload failed", model=self.model_id, error=str(exc))
                # a ConfigError's text names files: say only which option
                what = f"options.{exc.key}" if isinstance(exc, ConfigError) else str(exc)
                why = f"its reload failed: {what}"
                await conn.close(5)
            else:
                why = None
                await conn.lost.wait()
            watchdog.cancel()
            code = await conn.proc.wait()
            await conn.pump
            if self._closing:
                return
            self._crashed(code, why)
            self._resolve_first(None)
            delay = (self.next_attempt or time.time()) - time.time()
            await asyncio.sleep(max(0.0, delay))
            self.restarts += 1

    async def _start(self, conn: Connection) -> None:
        conn.send(wire.LOAD, 0, (self.name, self.model_id, self.options, str(self.base_dir)))
        try:
            info, capabilities, tokenizer = await asyncio.wait_for(
                asyncio.shield(conn.loaded), self.worker.load_timeout
            )
        except TimeoutError:
            log.error("worker load timed out; killing it", model=self.model_id, pid=conn.pid)
            conn.kill()
            raise WorkerLost from None
        self._info, self._capabilities, self._tokenizer = info, capabilities, tokenizer
        self.state, self.reason, self.next_attempt = "ready", None, None
        self.up_since = time.monotonic()
        log.info("worker ready", model=self.model_id, pid=conn.pid, restarts=self.restarts)
        self._resolve_first(None)

    async def _watch(self, conn: Connection) -> None:
        """Kill a worker that stops sending heartbeats (hung), or whose backend says its
        engine failed (a restart is the cure)."""
        timeout = self.worker.heartbeat_timeout
        while conn.alive:
            await asyncio.sleep(self.worker.heartbeat_interval)
            silent = time.monotonic() - conn.last_beat
            if silent > timeout:
                log.error(
                    "worker missed its heartbeat; killing it",
                    model=self.model_id,
                    pid=conn.pid,
                    silent_seconds=round(silent, 1),
                )
                conn.kill()
                return
            if conn.health is not None and conn.health.state == "failed":
                log.error(
                    "worker's engine failed; restarting it",
                    model=self.model_id,
                    pid=conn.pid,
                    reason=conn.health.reason,
                )
                conn.kill()
                return

    def _crashed(self, returncode: int, why: str | None) -> None:
        self.last_exit = describe_exit(returncode)
        up = self.up_since if self.state == "ready" else None
        gave_up, delay = self.policy.crashed(time.monotonic(), up)
        self.up_since = None
        self.next_attempt = time.time() + delay
        self.state = "crashed" if gave_up else "restarting"
        self.reason = why or f"its worker process stopped ({self.last_exit})"
        log.error(
            "worker stopped",
            model=self.model_id,
            exit=self.last_exit,
            state=self.state,
            retry_in_seconds=round(delay, 1),
        )

    def _resolve_first(self, exc: BaseException | None) -> bool:
        """Settle `load()` once; True if this call settled it."""
        if self._first_load is None or self._first_load.done():
            return False
        if exc is None:
            self._first_load.set_result(None)
        else:
            self._first_load.set_exception(exc)
        return True

    async def aclose(self) -> None:
        self._closing = True
        self.state = "closed"
        conn, self.conn = self.conn, None
        if conn is not None and conn.proc.returncode is None:
            await conn.close(10)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor

    # -- status -----------------------------------------------------------------------

    def health(self) -> Health:
        if self.state == "ready" and self.conn is not None and self.conn.alive:
            health = self.conn.health or Health()
            if health.state == "failed":  # the worker is about to be restarted: not for good
                return Health("unavailable", f"the model's worker is restarting ({health.reason})")
            return health
        if self.state == "failed":
            return Health("failed", self.reason)
        return Health("unavailable", self._unavailable_reason())

    def _unavailable_reason(self) -> str:
        what = {"crashed": "has crashed repeatedly", "starting": "is starting"}.get(
            self.state, "is restarting"
        )
        why = f" ({self.reason})" if self.reason else ""
        return f"the model's worker process {what}{why}"

    def worker_status(self) -> dict[str, Any]:
        conn = self.conn
        return {
            "pid": conn.pid if conn is not None and conn.alive else None,
            "state": self.state,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "next_attempt": self.next_attempt if self.state in ("restarting", "crashed") else None,
        }

    def stats(self) -> Mapping[str, Any]:
        return dict(self.conn.stats) if self.conn is not None and self.conn.alive else {}

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def info(self) -> ModelInfo:
        if self._info is None:
            return ModelInfo(self.model_id, self.name, self._capabilities, {})
        return self._info

    def tokenizer_info(self) -> TokenizerInfo:
        if isinstance(self._tokenizer, TokenizerInfo):
            return self._tokenizer
        if self._tokenizer is None:
            raise self._no_tokenizer()
        raise wire.decode_error(self._tokenizer)

    # -- serving ----------------------------------------------------------------------

    def _serving(self) -> Connection:
        conn = self.conn
        if self.state == "ready" and conn is not None and conn.alive:
            return conn
        raise self._crash_error()

    def _crash_error(self) -> UpstreamError:
        wait = 1.0
        if self.next_attempt is not None:
            wait = max(1.0, self.next_attempt - time.time())
        return UpstreamError(
            f"The model '{self.model_id}' is unavailable: {self._unavailable_reason()}; "
            "retry later.",
            status=503,
            code="backend_crashed",
            retry_after=wait,
        )

    def admit(self, count: int) -> Admission:
        self._serving()
        return ProcessAdmission(self, count, next(self._ids))

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        return self.run_sequence(request, None)

    async def run_sequence(
        self, request: GenerationRequest, admission: ProcessAdmission | None
    ) -> AsyncIterator[GenerationEvent]:
        conn = self._serving()
        if admission is not None and admission.conn is not conn:
            raise self._crash_error()  # the worker it was admitted by is gone
        seq = next(self._ids)
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        conn.sequences[seq] = queue
        claim = (admission.ident, admission.count) if admission else (None, 0)
        conn.send(wire.GENERATE, seq, (request, *claim))
        ended = False
        try:
            while True:
                kind, payload = await queue.get()
                if kind == wire.EVENT:
                    event, snapshot = payload
                    if snapshot is not None and admission is not None:
                        admission.snapshot = snapshot
                    yield event
                elif kind == wire.DONE:
                    ended = True
                    if admission is not None:
                        admission.snapshot = payload
                    return
                elif kind == wire.ERROR:
                    ended = True
                    raise wire.decode_error(payload)
                elif kind == LOST:
                    ended = True
                    raise self._crash_error()
        finally:
            conn.sequences.pop(seq, None)
            if not ended:
                conn.send(wire.CANCEL, seq)

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            return await self._serving().call(method, *args)
        except WorkerLost:
            raise self._crash_error() from None

    async def tokenize(
        self, text: str, add_special: bool = False, parse_special: bool = True
    ) -> list[int]:
        return await self._call("tokenize", text, add_special, parse_special)

    async def detokenize(self, tokens: Sequence[int]) -> str:
        return await self._call("detokenize", list(tokens))

    async def token_pieces(self, tokens: Sequence[int]) -> list[bytes]:
        return await self._call("token_pieces", list(tokens))
