"""A call's claim on the batching engine: room for all of its sequences reserved at
once (so a burst sees exactly `parallel + max_queue` sequences admitted and the rest
refused before any work), and the prompt sizes of the sequences it started (so a call
that ends early is still accounted for)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from backends.base import Admission, Backend, GenerationEvent, GenerationRequest
from backends.llama_cpp.engine import Engine
from backends.llama_cpp.sequence import Sequence, Ticket


class TicketedGenerate(Protocol):
    def __call__(
        self,
        request: GenerationRequest,
        ticket: Ticket | None,
        on_prompt: Callable[[int], None] | None,
        on_sequence: Callable[[Sequence], None] | None,
    ) -> AsyncIterator[GenerationEvent]: ...


class EngineAdmission(Admission):
    def __init__(
        self, backend: Backend, engine: Engine, ticket: Ticket, generate: TicketedGenerate
    ) -> None:
        super().__init__(backend)
        self._engine = engine
        self._ticket = ticket
        self._generate = generate
        self._prompts: list[int | None] = []
        self._sequences: list[Sequence | None] = []

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        index = len(self._prompts)
        self._prompts.append(None)
        self._sequences.append(None)

        def on_prompt(n_tokens: int) -> None:
            self._prompts[index] = n_tokens

        def on_sequence(seq: Sequence) -> None:
            self._sequences[index] = seq

        return self._generate(request, self._ticket, on_prompt, on_sequence)

    def release(self) -> None:
        self._engine.release(self._ticket)

    def prompt_tokens(self) -> list[int | None]:
        return list(self._prompts)

    def queue_seconds(self) -> list[float | None]:
        return [s.queue_seconds if s is not None else None for s in self._sequences]
