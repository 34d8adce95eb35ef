"""Test the gateway's own logic in process, against a backend that follows a script.

- `ScriptedBackend`: a test double that yields scripted tokens (per request if asked),
  with configurable capabilities, log-probs, echo, failures and endless generations,
  and records what it was asked and what was left unfinished. It makes no claim about
  any real backend.
- `asgi_client(app)`: an `httpx.AsyncClient` wired to the app through
  `httpx.ASGITransport` (no socket), with the app's lifespan driven around it, which
  ASGITransport does not do by itself.
- `ThreadedServer`: the same app served by uvicorn on a free loopback port, for what
  needs a real socket (an SDK's own transport, a client that disconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backends.base import (
    Backend,
    Capabilities,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
    TokenLogprob,
    Usage,
)
from gateway.app import create_app
from gateway.config import GatewayConfig, ServerSettings
from gateway.registry import ModelRegistry, ServedModel
from tests.support.server import free_port

BASE_URL = "http://127.0.0.1"


class ThreadedServer:
    """An ASGI app served by uvicorn in a thread on a free loopback port; subclasses
    choose the server through `build`."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.server = self.build(app)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def build(self, app: Any) -> uvicorn.Server:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="on"
        )
        return uvicorn.Server(config)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass(frozen=True)
class Script:
    """What one generation does: yield `tokens` (each with log-prob `logprob[i]`,
    default -1.0), then finish with `finish_reason`. `fail_with` is raised once
    `fail_after` tokens were sent (0: before the first event); `block_after` tokens in
    (at most all of them: then before finishing), the generation waits until it is
    closed, as an endless one would."""

    tokens: tuple[str, ...] = ("hello", " world")
    finish_reason: FinishReason = "length"
    prompt_tokens: int = 3
    logprob: tuple[float, ...] = ()
    fail_with: BaseException | None = None
    fail_after: int = 0
    block_after: int | None = None

    @classmethod
    def of(cls, text: str, **kw: Any) -> Script:
        """`text` split into words, each word after the first with its leading space."""
        words = text.split(" ")
        return cls(tuple(w if i == 0 else " " + w for i, w in enumerate(words)), **kw)

    def logprob_of(self, i: int) -> float:
        return self.logprob[i] if i < len(self.logprob) else -1.0


@dataclass
class Calls:
    """What a `ScriptedBackend` was asked and how each generation ended."""

    requests: list[GenerationRequest] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)  # request ids run to Finished
    abandoned: list[str] = field(default_factory=list)  # closed (or failed) before that
    running: int = 0
    changed: asyncio.Event | None = None

    def note(self) -> None:
        if self.changed is not None:
            self.changed.set()

    async def wait_for(self, predicate: Callable[[Calls], bool], timeout: float = 10) -> None:
        """Wait, without sleeping blindly, until `predicate(self)` holds."""

        async def until() -> None:
            while not predicate(self):
                self.changed = asyncio.Event()
                await self.changed.wait()

        await asyncio.wait_for(until(), timeout)


class ScriptedBackend(Backend):
    """A gateway-logic test double: yields `text` word by word, or raises `fail_with`
    after `fail_after` words; `script` (a function of the request) overrides that per
    generation. With `echo`, the prompt comes first; with `logprobs`, every token
    carries its scripted log-prob and `logprobs` alternatives. It makes no claim about
    any real backend."""

    name = "scripted"

    def __init__(
        self,
        model_id: str,
        text: str = "hello world",
        fail_with: BaseException | None = None,
        fail_after: int = 0,
        *,
        capabilities: Capabilities | None = None,
        script: Callable[[GenerationRequest], Script] | None = None,
        details: Mapping[str, Any] | None = None,
        stats: Mapping[str, Any] | None = None,
    ) -> None:
        self.model_id = model_id
        self.text = text
        self.fail_with = fail_with
        self.fail_after = fail_after
        self._capabilities = capabilities or Capabilities()
        self._script = script
        self._details = dict(details or {})
        self._stats = dict(stats or {})
        self.calls = Calls()

    @classmethod
    def from_config(cls, model_id: str, options: Mapping[str, Any], base_dir: Path) -> Self:
        return cls(model_id)

    async def load(self) -> None:
        return None

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def info(self) -> ModelInfo:
        return ModelInfo(self.model_id, self.name, self.capabilities, self._details)

    def stats(self) -> Mapping[str, Any]:
        return {**self._stats, "running": self.calls.running}

    def script_for(self, request: GenerationRequest) -> Script:
        if self._script is not None:
            return self._script(request)
        return Script.of(self.text, fail_with=self.fail_with, fail_after=self.fail_after)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        script = self.script_for(request)
        calls = self.calls
        calls.requests.append(request)
        calls.running += 1
        calls.note()
        done = False
        try:
            if request.echo:
                yield _echo(request)
            for i, token in enumerate(script.tokens):
                if script.fail_with is not None and i == script.fail_after:
                    raise script.fail_with
                if script.block_after is not None and i == script.block_after:
                    await asyncio.Event().wait()  # until the consumer closes us
                yield TextDelta(token, (i,), _logprobs(request, token, script.logprob_of(i)))
            if script.fail_with is not None and script.fail_after >= len(script.tokens):
                raise script.fail_with
            if script.block_after is not None and script.block_after >= len(script.tokens):
                await asyncio.Event().wait()
            done = True
            usage = Usage(script.prompt_tokens, len(script.tokens))
            yield Finished(script.finish_reason, usage)
        finally:
            calls.running -= 1
            (calls.finished if done else calls.abandoned).append(request.request_id)
            calls.note()

    async def aclose(self) -> None:
        return None


def _logprobs(request: GenerationRequest, token: str, value: float) -> tuple[TokenLogprob, ...]:
    if request.logprobs is None:
        return ()
    top = ((token, value), *((f"<alt{k}>", value - k) for k in range(1, request.logprobs)))
    return (TokenLogprob(token, value, top[: request.logprobs]),)


def _echo(request: GenerationRequest) -> TextDelta:
    prompt = request.prompt
    text = prompt if isinstance(prompt, str) else "".join(f"<{t}>" for t in prompt)
    entries: tuple[TokenLogprob, ...] = ()
    if request.logprobs is not None:
        entries = (TokenLogprob(text, None),)
    return TextDelta(text, (), entries, is_prompt=True)


def scripted_app(
    backends: Sequence[ScriptedBackend] | ScriptedBackend, settings: ServerSettings | None = None
) -> Any:
    """The real app (`create_app`) over scripted backends, every model already ready."""
    items = [backends] if isinstance(backends, ScriptedBackend) else list(backends)
    models = ModelRegistry([ServedModel(b.model_id, b, state="ready") for b in items])
    config = GatewayConfig(settings or ServerSettings(), (), Path("inline.toml"))
    return create_app(config, models)


class WithLifespanState:
    """Hands each request the lifespan's state, as an ASGI server does."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(self.state)}
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[dict[str, Any]]:
    """Run the app's lifespan startup, yield its state, then run its shutdown."""
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def send(message: Message) -> None:
        await outbox.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    task = asyncio.create_task(app(scope, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(outbox.get(), 10)
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"lifespan startup failed: {started}")
    try:
        yield state
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(outbox.get(), 10)
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def asgi_client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client that calls `app` in process. Note: ASGITransport hands back a
    response only once the app has sent all of it (streams arrive whole)."""
    async with lifespan(app) as state:
        transport = httpx.ASGITransport(app=WithLifespanState(app, state))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client
