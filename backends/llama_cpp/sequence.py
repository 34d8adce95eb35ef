"""What the batching engine holds: one `Sequence` per generation, from queued to
finished, and the `Ticket` of room promised to one call's sequences."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from backends.base import GenerationEvent, SamplingParams, TokenLogprob
from backends.llama_cpp.sampling import Sampler
from backends.text import StopMatcher, Utf8Stream

EngineOutput = GenerationEvent | BaseException


@dataclass(eq=False)
class Sequence:
    """One generation, from queued to finished. Owned by the engine thread once
    submitted, except `cancelled`, which the asyncio side may set at any time."""

    prompt: list[int]
    params: SamplingParams
    max_new_tokens: int
    loop: asyncio.AbstractEventLoop
    request_id: str = ""
    logprobs: int | None = None  # alternatives per token; None: no log-probs
    # echo: emit the prompt (text, ids, and with logprobs their log-probs) first;
    # `echo_from` skips tokens that were added, not written (a BOS)
    echo: bool = False
    echo_text: str = ""
    echo_from: int = 0
    grammar: str | None = None  # GBNF the output must follow (structured output)
    output: asyncio.Queue[EngineOutput] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    # engine-thread state
    submitted_at: float = 0.0  # time.perf_counter() when it joined the queue
    queue_seconds: float | None = None  # from the queue to a slot
    slot: int = -1
    n_prefilled: int = 0
    n_generated: int = 0
    n_reused: int = 0  # prompt tokens whose KV was already in the slot
    last_token: int = -1
    sampler: Sampler | None = None
    generated: list[int] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)
    utf8: Utf8Stream = field(default_factory=Utf8Stream)
    stops: StopMatcher | None = None
    done: bool = False

    @property
    def n_past(self) -> int:
        return self.n_prefilled + self.n_generated

    @property
    def scores_prompt(self) -> bool:
        """Echo with log-probs needs a logits row for every prompt token."""
        return self.echo and self.logprobs is not None

    def emit(self, item: EngineOutput) -> None:
        try:
            self.loop.call_soon_threadsafe(self.output.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled = True


class Ticket:
    """Room the engine promised to one call: `unused` sequences may still be submitted
    against it without a check of their own."""

    def __init__(self, count: int) -> None:
        self.unused = count


class Outbox:
    """The engine's outputs of one step, handed to the event loop together: one
    wake-up per loop per step instead of one per sequence and token, sent once the
    engine's own bookkeeping is done, right before the next decode. The event loop's
    work on them (SSE chunks, socket writes) then overlaps the next decode, which runs
    without the GIL, instead of holding up the engine thread as it wants the GIL back."""

    def __init__(self) -> None:
        self._items: list[tuple[Sequence, EngineOutput]] = []

    def put(self, seq: Sequence, item: EngineOutput) -> None:
        self._items.append((seq, item))

    def flush(self) -> None:
        if not self._items:
            return
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Sequence, EngineOutput]]] = {}
        for seq, item in items:
            by_loop.setdefault(seq.loop, []).append((seq, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                for seq, _ in batch:
                    seq.cancelled = True


def _deliver(batch: list[tuple[Sequence, EngineOutput]]) -> None:
    for seq, item in batch:
        seq.output.put_nowait(item)
