"""Run the generations behind one API call: several choices at once, primed so that
errors surface before any response is sent, merged for streaming or collected for a
plain response, and stopped when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.types import Receive

from backends.base import (
    Admission,
    Backend,
    Finished,
    GenerationEvent,
    GenerationRequest,
    TextDelta,
    TokenLogprob,
    ToolCall,
    Usage,
)

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the response was complete."""


class Tally:
    """The tokens a call's choices have consumed so far, for its access line, also
    when the call ends early (the client left): completion tokens as their events
    pass, prompt tokens from each choice's `Finished` or, before that, from what the
    backend's admission knows. Prompts count once however many choices share them."""

    def __init__(self, per_prompt: int = 1) -> None:
        self.per_prompt = per_prompt
        self.admission: Admission | None = None
        self._completion: dict[int, int] = {}
        self._finished: dict[int, Usage] = {}

    def seen(self, index: int, event: GenerationEvent) -> None:
        if isinstance(event, Finished):
            self._finished[index] = event.usage
        elif not event.is_prompt:
            self._completion[index] = self._completion.get(index, 0) + len(event.token_ids)

    def usage(self) -> tuple[int | None, int]:
        """(prompt tokens, None when no choice's is known yet; completion tokens)."""
        known = self.admission.prompt_tokens() if self.admission is not None else []
        count = max([len(known), *(i + 1 for i in (*self._completion, *self._finished))])
        prompt: int | None = None
        completion = 0
        for i in range(count):
            finished = self._finished.get(i)
            if finished is not None:
                p, c = finished.prompt_tokens, finished.completion_tokens
            else:
                p = known[i] if i < len(known) else None
                c = self._completion.get(i, 0)
            if p is not None and i % self.per_prompt == 0:
                prompt = (prompt or 0) + p
            completion += c
        return prompt, completion


@dataclass
class ChoiceStream:
    index: int
    first: GenerationEvent
    rest: AsyncIterator[GenerationEvent]
    tally: Tally | None = None

    async def events(self) -> AsyncIterator[GenerationEvent]:
        async with contextlib.aclosing(self.rest):
            self._count(self.first)
            yield self.first
            if isinstance(self.first, Finished):
                return
            async for event in self.rest:
                self._count(event)
                yield event

    def _count(self, event: GenerationEvent) -> None:
        if self.tally is not None:
            self.tally.seen(self.index, event)


@dataclass
class ChoiceOutcome:
    """Everything one choice produced. `prompt_*` is the echoed prompt, if any."""

    index: int
    text: str
    finish_reason: str
    usage: Usage
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_text: str = ""
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: tuple[ToolCall, ...] = ()  # the calls its Finished event carried

    @property
    def mean_logprob(self) -> float:
        values = [lp.logprob for lp in self.logprobs if lp.logprob is not None]
        return sum(values) / len(values) if values else float("-inf")


class FirstToken:
    """Records when the first generated token of a call arrived."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.ms: float | None = None

    def seen(self, event: GenerationEvent) -> None:
        if self.ms is None and isinstance(event, TextDelta) and not event.is_prompt:
            self.ms = round((time.perf_counter() - self.started) * 1000, 1)


async def open_choices(
    backend: Backend, requests: Sequence[GenerationRequest], tally: Tally | None = None
) -> list[ChoiceStream]:
    """Start every generation and wait for each one's first event, so that a bad request
    fails as a whole with a proper status before anything is sent.

    Room for every choice is claimed at once first (`Backend.admit`): a call that does
    not fit is refused (429) before any prompt is tokenised, and a burst of calls sees
    exactly the backend's capacity admitted. `tally`, if given, counts their tokens."""
    admission = backend.admit(len(requests))
    if tally is not None:
        tally.admission = admission
    gens = [admission.generate(r) for r in requests]
    try:
        firsts = await asyncio.gather(*(anext(g) for g in gens), return_exceptions=True)
    except BaseException:  # cancelled (the client left): stop the ones that started
        await asyncio.gather(*(g.aclose() for g in gens), return_exceptions=True)
        raise
    finally:
        admission.release()  # every choice has started (or failed): give back the rest
    failure = next((f for f in firsts if isinstance(f, BaseException)), None)
    if failure is not None:
        await asyncio.gather(*(g.aclose() for g in gens), return_exceptions=True)
        raise failure
    return [
        ChoiceStream(i, first, gen, tally)  # type: ignore[arg-type]
        for i, (first, gen) in enumerate(zip(firsts, gens, strict=True))
    ]


async def merge(streams: Sequence[ChoiceStream]) -> AsyncIterator[tuple[int, GenerationEvent]]:
    """Interleave the choices' events as they arrive. Closing this iterator stops them all."""
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0].events()) as events:
            async for event in events:
                yield streams[0].index, event
        return
    queue: asyncio.Queue[tuple[int, GenerationEvent | BaseException]] = asyncio.Queue()

    async def pump(stream: ChoiceStream) -> None:
        try:
            async with contextlib.aclosing(stream.events()) as events:
                async for event in events:
                    await queue.put((stream.index, event))
        except Exception as exc:
            await queue.put((stream.index, exc))

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        remaining = len(streams)
        while remaining:
            index, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Finished):
                remaining -= 1
            yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def collect(streams: Sequence[ChoiceStream], first_token: FirstToken) -> list[ChoiceOutcome]:
    texts: dict[int, list[str]] = {s.index: [] for s in streams}
    partial = {s.index: ChoiceOutcome(s.index, "", "", Usage(0, 0)) for s in streams}
    async with contextlib.aclosing(merge(streams)) as events:
        async for index, event in events:
            outcome = partial[index]
            if isinstance(event, TextDelta):
                if event.is_prompt:
                    outcome.prompt_text = event.text
                    outcome.prompt_logprobs.extend(event.logprobs)
                    continue
                first_token.seen(event)
                texts[index].append(event.text)
                outcome.logprobs.extend(event.logprobs)
            else:
                outcome.text = "".join(texts[index])
                outcome.finish_reason = event.finish_reason
                outcome.usage = event.usage
                outcome.tool_calls = event.tool_calls
    return [partial[i] for i in sorted(partial)]


def total_usage(usages: Sequence[Usage], per_prompt: int) -> Usage:
    """OpenAI counts each prompt once, however many choices (or best_of candidates)
    it has, and every generated token of every candidate."""
    prompt = sum(u.prompt_tokens for i, u in enumerate(usages) if i % per_prompt == 0)
    return Usage(prompt, sum(u.completion_tokens for u in usages))


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`, but cancel it and raise ClientDisconnected if the client leaves
    first. Cancelling closes the backend's iterators, which frees the engine's slots."""

    async def wait_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    work_task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(wait_disconnect())
    try:
        done, _ = await asyncio.wait({work_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work_task.done():
            work_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work_task
    if work_task not in done or work_task.cancelled():
        raise ClientDisconnected
    return work_task.result()
