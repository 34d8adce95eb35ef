"""Shadow traffic: a sampled copy of a routed request sent to a candidate model in a
task the app owns (never the request's), so it can neither delay nor fail the client.
Copies beyond `max_concurrency` are dropped and counted, never queued. When both
ends are known, the copy is compared with the primary (texts, finish reasons, token
counts, latencies; exact match at temperature 0) in one log line and the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from backends.base import Backend, GenerationEvent, GenerationRequest, TextDelta
from gateway.errors import to_api_error
from gateway.generation import ChoiceStream, FirstToken, collect, open_choices
from gateway.routing.config import Shadow

log = structlog.get_logger("gateway.shadow")


@dataclass
class Outcome:
    """What one side produced: per-choice texts and finish reasons, tokens, seconds."""

    texts: dict[int, str] = field(default_factory=dict)
    finish: dict[int, str] = field(default_factory=dict)
    completion_tokens: int = 0
    seconds: float = 0.0


class PrimaryTap:
    """Watches the primary's choice streams as they pass to the client and resolves
    `done` with what they produced (None if they end early or fail)."""

    def __init__(self, count: int) -> None:
        self.started = time.perf_counter()
        self.done: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._outcome = Outcome()
        self._texts: dict[int, list[str]] = {}
        self._left = count

    def wrap(self, streams: Sequence[ChoiceStream]) -> list[ChoiceStream]:
        for s in streams:
            self._see(s.index, s.first)
        return [
            ChoiceStream(s.index, s.first, self._watch(s.index, s.rest), s.tally) for s in streams
        ]

    def abandon(self) -> None:
        """The primary failed before it started: nothing to compare with."""
        self._resolve(None)

    async def _watch(
        self, index: int, rest: AsyncIterator[GenerationEvent]
    ) -> AsyncIterator[GenerationEvent]:
        try:
            async with contextlib.aclosing(rest):
                async for event in rest:
                    self._see(index, event)
                    yield event
        finally:
            if index not in self._outcome.finish:
                self._resolve(None)

    def _see(self, index: int, event: GenerationEvent) -> None:
        if isinstance(event, TextDelta):
            if not event.is_prompt:
                self._texts.setdefault(index, []).append(event.text)
            return
        self._outcome.texts[index] = "".join(self._texts.get(index, []))
        self._outcome.finish[index] = event.finish_reason
        self._outcome.completion_tokens += event.usage.completion_tokens
        self._left -= 1
        if self._left == 0:
            self._outcome.seconds = time.perf_counter() - self.started
            self._resolve(self._outcome)

    def _resolve(self, value: Outcome | None) -> None:
        if not self.done.done():
            self.done.set_result(value)


class ShadowRunner:
    """The app's shadow tasks: started by requests, owned (and cancelled at shutdown)
    by the app. `count(route, shadow, result)` feeds the metrics; `observe_seconds`
    the latency comparison."""

    def __init__(
        self,
        count: Callable[[str, str, str], None],
        observe_seconds: Callable[[str, str, str, float], None],
        rng: random.Random | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._count = count
        self._observe = observe_seconds
        self._report = report or (lambda comparison: None)  # the experiment record's `shadow`
        self._rng = rng or random.Random()
        self._running: dict[str, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def start(
        self,
        route: str,
        shadow: Shadow,
        backend: Callable[[], Backend],
        requests: list[GenerationRequest],
        deadline: float,
    ) -> PrimaryTap | None:
        """Maybe start a copy (sampled, within the concurrency limit); returns the tap
        to put on the primary's streams, or None when no copy runs."""
        if self._rng.random() >= shadow.sample:
            return None
        if self._running.get(shadow.model, 0) >= shadow.max_concurrency:
            self._count(route, shadow.model, "dropped")
            return None
        self._running[shadow.model] = self._running.get(shadow.model, 0) + 1
        tap = PrimaryTap(len(requests))
        task = asyncio.create_task(self._run(route, shadow, backend, requests, tap, deadline))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return tap

    async def _run(
        self,
        route: str,
        shadow: Shadow,
        backend: Callable[[], Backend],
        requests: list[GenerationRequest],
        tap: PrimaryTap,
        deadline: float,
    ) -> None:
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(deadline):
                    copy = await _generate(backend(), requests)
                copy.seconds = time.perf_counter() - started
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = to_api_error(exc) if not isinstance(exc, TimeoutError) else None
                self._count(route, shadow.model, "error")
                self._report({"model": shadow.model, "result": "error"})
                log.warning(
                    "shadow failed",
                    route=route,
                    shadow=shadow.model,
                    error=error.code or error.type if error else "timeout",
                )
                return
            try:  # bounded too: a primary whose streams were never read never resolves
                primary = await asyncio.wait_for(tap.done, deadline)
            except TimeoutError:
                primary = None
            self._compare(route, shadow, requests, primary, copy)
        finally:
            self._running[shadow.model] -= 1

    def _compare(
        self,
        route: str,
        shadow: Shadow,
        requests: list[GenerationRequest],
        primary: Outcome | None,
        copy: Outcome,
    ) -> None:
        self._observe(route, shadow.model, "shadow", copy.seconds)
        if primary is None:  # the primary ended early: nothing to compare with
            self._count(route, shadow.model, "ok")
            self._report(
                {"model": shadow.model, "result": "ok", "primary": "incomplete",
                 "shadow_tokens": copy.completion_tokens,
                 "shadow_ms": round(copy.seconds * 1000, 1)}
            )  # fmt: skip
            log.info("shadow", route=route, shadow=shadow.model, primary="incomplete")
            return
        self._observe(route, shadow.model, "primary", primary.seconds)
        greedy = all(r.params.temperature == 0 for r in requests)
        exact = primary.texts == copy.texts and primary.finish == copy.finish
        result = "mismatch" if greedy and not exact else "ok"
        self._count(route, shadow.model, result)
        self._report(
            {
                "model": shadow.model,
                "result": result,
                "exact_match": exact,
                "greedy": greedy,
                "primary_finish": _joined(primary.finish),
                "shadow_finish": _joined(copy.finish),
                "primary_tokens": primary.completion_tokens,
                "shadow_tokens": copy.completion_tokens,
                "primary_ms": round(primary.seconds * 1000, 1),
                "shadow_ms": round(copy.seconds * 1000, 1),
            }
        )
        log.info(
            "shadow",
            route=route,
            shadow=shadow.model,
            result=result,
            exact_match=exact,
            greedy=greedy,
            primary_text=_joined(primary.texts),
            shadow_text=_joined(copy.texts),
            primary_finish=_joined(primary.finish),
            shadow_finish=_joined(copy.finish),
            primary_tokens=primary.completion_tokens,
            shadow_tokens=copy.completion_tokens,
            primary_ms=round(primary.seconds * 1000, 1),
            shadow_ms=round(copy.seconds * 1000, 1),
        )

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _generate(backend: Backend, requests: list[GenerationRequest]) -> Outcome:
    streams = await open_choices(backend, requests)
    outcomes = await collect(streams, FirstToken())
    out = Outcome()
    for o in outcomes:
        out.texts[o.index] = o.text
        out.finish[o.index] = o.finish_reason
        out.completion_tokens += o.usage.completion_tokens
    return out


def _joined(values: dict[int, str]) -> str:
    text = "\x1e".join(values[i] for i in sorted(values))
    return text if len(text) <= 2000 else text[:2000] + "..."
