"""One request at a time per model, with a bounded queue behind it.

ctransformers is not thread-safe (two evaluations at once share one scratch buffer and
segfault), so a model runs one sequence at a time. Admission counts like llama_cpp's:
a call reserves room for all of its sequences at once (all or none) before any work,
and past the running one plus `max_queue` waiting it is refused with 429."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from backends.base import Admission, Backend, GenerationEvent, GenerationRequest
from backends.errors import Overloaded


@dataclass(slots=True)
class Ticket:
    unused: int


class OneAtATime:
    def __init__(self, max_queue: int) -> None:
        self.capacity = 1 + max_queue
        self._max_queue = max_queue
        self._reserved = 0  # admitted, not yet started
        self._active = 0  # started: running or waiting for their turn
        self._running = False
        self._lock = asyncio.Lock()

    def reserve(self, count: int) -> Ticket:
        self._check_room(count)
        self._reserved += count
        return Ticket(count)

    def release(self, ticket: Ticket) -> None:
        """Give back what a call did not start."""
        self._reserved -= ticket.unused
        ticket.unused = 0

    def start(self, ticket: Ticket | None) -> None:
        if ticket is not None and ticket.unused > 0:
            ticket.unused -= 1
            self._reserved -= 1
        else:
            self._check_room(1)
        self._active += 1

    def done(self) -> None:
        self._active -= 1

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self._lock:
            self._running = True
            try:
                yield
            finally:
                self._running = False

    def stats(self) -> dict[str, Any]:
        running = int(self._running)
        return {
            "busy_slots": running,
            "slots": 1,
            "queued": max(0, self._active - running),
            "max_queue": self._max_queue,
        }

    def _check_room(self, count: int) -> None:
        if count > self.capacity:
            raise Overloaded(
                f"this request needs {count} sequences at once (n, best_of and prompt lists "
                f"multiply), but this model runs one at a time with {self._max_queue} "
                "queued; send fewer",
                retry_after=1.0,
            )
        if self._active + self._reserved + count > self.capacity:
            raise Overloaded(
                f"the model is busy and its queue of {self._max_queue} is full; retry shortly",
                retry_after=1.0,
            )


class Progress:
    """What one started sequence reports to its call's admission."""

    def __init__(self) -> None:
        self.prompt_tokens: int | None = None
        self.queue_seconds: float | None = None


class QueueAdmission(Admission):
    def __init__(
        self,
        backend: Backend,
        queue: OneAtATime,
        ticket: Ticket,
        generate: Callable[
            [GenerationRequest, Ticket | None, Progress | None], AsyncIterator[GenerationEvent]
        ],
    ) -> None:
        super().__init__(backend)
        self._queue = queue
        self._ticket = ticket
        self._generate = generate
        self._progress: list[Progress] = []

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        progress = Progress()
        self._progress.append(progress)
        return self._generate(request, self._ticket, progress)

    def release(self) -> None:
        self._queue.release(self._ticket)

    def prompt_tokens(self) -> list[int | None]:
        return [p.prompt_tokens for p in self._progress]

    def queue_seconds(self) -> list[float | None]:
        return [p.queue_seconds for p in self._progress]
