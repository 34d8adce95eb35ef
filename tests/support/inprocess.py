"""Serve an ASGI app with uvicorn in a background thread on a free loopback port:
for tests of the gateway's own logic that need a backend which misbehaves on purpose."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Self

import uvicorn

from backends.base import (
    Backend,
    Capabilities,
    Finished,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
    Usage,
)
from tests.support.server import free_port


class ThreadedServer:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("in-process server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class ScriptedBackend(Backend):
    """A gateway-logic test double: yields `text` token by token, or raises `fail_with`
    after `fail_after` tokens. It makes no claim about any real backend."""

    name = "scripted"

    def __init__(
        self,
        model_id: str,
        text: str = "hello world",
        fail_with: Exception | None = None,
        fail_after: int = 0,
    ) -> None:
        self.model_id = model_id
        self.text = text
        self.fail_with = fail_with
        self.fail_after = fail_after

    @classmethod
    def from_config(cls, model_id: str, options: Mapping[str, Any], base_dir: Path) -> Self:
        return cls(model_id)

    async def load(self) -> None:
        return None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def info(self) -> ModelInfo:
        return ModelInfo(self.model_id, self.name, self.capabilities)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        words = self.text.split(" ")
        for i, word in enumerate(words):
            if self.fail_with is not None and i == self.fail_after:
                raise self.fail_with
            yield TextDelta(word if i == 0 else " " + word, (i,))
        yield Finished("length", Usage(3, len(words)))

    async def aclose(self) -> None:
        return None
