"""gateway/generation.py on its own: priming every choice, merging, collecting,
counting usage, and cancelling when the client leaves (over a scripted backend)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from backends.base import (
    Capabilities,
    Finished,
    GenerationRequest,
    TextDelta,
    TokenLogprob,
    Usage,
)
from backends.errors import InvalidRequest
from gateway.generation import (
    ChoiceOutcome,
    ClientDisconnected,
    FirstToken,
    collect,
    merge,
    open_choices,
    total_usage,
    unless_disconnected,
)
from tests.support.inprocess import Script, ScriptedBackend

pytestmark = pytest.mark.anyio


def requests(count: int, **kw: Any) -> list[GenerationRequest]:
    return [GenerationRequest(f"p{k}", request_id=f"r/{k}", **kw) for k in range(count)]


def number(request: GenerationRequest) -> int:
    return int(request.request_id.rsplit("/", 1)[1])


async def test_open_choices_primes_every_generation() -> None:
    backend = ScriptedBackend("m", script=lambda r: Script((f"t{number(r)}", "!")))
    streams = await open_choices(backend, requests(3))
    assert [s.index for s in streams] == [0, 1, 2]
    assert [s.first for s in streams] == [TextDelta(f"t{k}", (0,)) for k in range(3)]
    assert backend.calls.running == 3  # started, waiting to be read
    outcomes = await collect(streams, FirstToken())
    assert [o.text for o in outcomes] == ["t0!", "t1!", "t2!"]
    assert backend.calls.running == 0 and len(backend.calls.finished) == 3


async def test_open_choices_failure_closes_the_started_ones() -> None:
    def one_fails(request: GenerationRequest) -> Script:
        if number(request) == 1:
            return Script(fail_with=InvalidRequest("nope", "prompt"))
        return Script(("a", "b"), block_after=1)

    backend = ScriptedBackend("m", script=one_fails)
    with pytest.raises(InvalidRequest, match="nope"):
        await open_choices(backend, requests(3))
    assert backend.calls.running == 0
    assert sorted(backend.calls.abandoned) == ["r/0", "r/1", "r/2"]


async def test_a_generation_that_finishes_at_once_is_a_stream_of_one_event() -> None:
    backend = ScriptedBackend("m", script=lambda r: Script(()))
    (stream,) = await open_choices(backend, requests(1))
    assert isinstance(stream.first, Finished)
    events = [e async for e in stream.events()]
    assert events == [Finished("length", Usage(3, 0))]


async def test_merge_interleaves_as_events_arrive() -> None:
    """Choice 0 waits for a gate that only choice 1's progress opens: a merge that read
    the choices one after the other would never finish."""
    gate = asyncio.Event()

    class Gated(ScriptedBackend):
        async def generate(self, request: GenerationRequest) -> Any:
            k = number(request)
            yield TextDelta(f"{k}a")
            if k == 0:
                await gate.wait()
            else:
                gate.set()
            yield TextDelta(f"{k}b")
            yield Finished("stop", Usage(1, 2))

    streams = await open_choices(Gated("m"), requests(2))

    async def read_all() -> list[tuple[int, Any]]:
        return [(i, e) async for i, e in merge(streams)]

    seen = await asyncio.wait_for(read_all(), 10)
    texts = [(i, e.text) for i, e in seen if isinstance(e, TextDelta)]
    assert texts.index((1, "1b")) < texts.index((0, "0b"))
    assert sorted(texts) == [(0, "0a"), (0, "0b"), (1, "1a"), (1, "1b")]
    assert [i for i, e in seen if isinstance(e, Finished)] == [1, 0]


async def test_merge_raises_the_first_failure_and_closes_the_others() -> None:
    def second_fails(request: GenerationRequest) -> Script:
        if number(request) == 1:
            return Script(("x", "y"), fail_with=RuntimeError("broken"), fail_after=1)
        return Script(("a", "b"), block_after=1)

    backend = ScriptedBackend("m", script=second_fails)
    streams = await open_choices(backend, requests(3))
    with pytest.raises(RuntimeError, match="broken"):
        async with contextlib.aclosing(merge(streams)) as events:
            async for _ in events:
                pass
    assert backend.calls.running == 0 and len(backend.calls.abandoned) == 3


@pytest.mark.parametrize("count", [1, 3])
async def test_closing_the_merge_closes_every_generation(count: int) -> None:
    backend = ScriptedBackend("m", script=lambda r: Script(("a", "b"), block_after=1))
    streams = await open_choices(backend, requests(count))
    events = merge(streams)
    first = await anext(events)
    assert isinstance(first[1], TextDelta)
    await events.aclose()
    assert backend.calls.running == 0 and len(backend.calls.abandoned) == count


async def test_collect_gathers_text_echo_logprobs_and_finish() -> None:
    def scripted(request: GenerationRequest) -> Script:
        k = number(request)
        return Script(("a", "b", "c")[: k + 1], "stop" if k else "length", 4, (-0.5, -1.5))

    backend = ScriptedBackend("m", capabilities=Capabilities(echo=True), script=scripted)
    streams = await open_choices(backend, requests(2, echo=True, logprobs=1))
    first_token = FirstToken()
    outcomes = await collect(streams, first_token)
    assert [(o.index, o.text, o.finish_reason) for o in outcomes] == [
        (0, "a", "length"),
        (1, "ab", "stop"),
    ]
    assert outcomes[1].prompt_text == "p1"
    assert outcomes[1].prompt_logprobs == [TokenLogprob("p1", None)]
    assert [lp.logprob for lp in outcomes[1].logprobs] == [-0.5, -1.5]
    assert outcomes[1].usage == Usage(4, 2)
    assert first_token.ms is not None and first_token.ms >= 0


def test_first_token_ignores_the_echoed_prompt() -> None:
    first = FirstToken()
    first.seen(TextDelta("prompt", is_prompt=True))
    assert first.ms is None
    first.seen(TextDelta("x"))
    stamp = first.ms
    assert stamp is not None
    first.seen(TextDelta("y"))
    assert first.ms == stamp


def test_mean_logprob_skips_unscored_tokens() -> None:
    entries = [TokenLogprob("a", None), TokenLogprob("b", -1.0), TokenLogprob("c", -3.0)]
    assert ChoiceOutcome(0, "", "stop", Usage(0, 0), entries).mean_logprob == -2.0
    assert ChoiceOutcome(0, "", "stop", Usage(0, 0)).mean_logprob == float("-inf")


def test_total_usage_counts_each_prompt_once_and_every_candidate() -> None:
    usages = [Usage(5, 1), Usage(5, 2), Usage(5, 3), Usage(7, 4), Usage(7, 5), Usage(7, 6)]
    assert total_usage(usages, per_prompt=3) == Usage(12, 21)
    assert total_usage(usages, per_prompt=1) == Usage(36, 21)
    assert total_usage([], per_prompt=1) == Usage(0, 0)


# -- unless_disconnected -------------------------------------------------------------


class Client:
    """An ASGI `receive` whose client may send more body, then may leave."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.messages = list(messages)
        self.left = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self.messages:
            return self.messages.pop(0)
        await self.left.wait()
        return {"type": "http.disconnect"}


async def test_unless_disconnected_returns_the_work_while_the_client_stays() -> None:
    client = Client({"type": "http.request", "body": b"", "more_body": False})

    async def work() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await unless_disconnected(client.receive, work()) == "done"


async def test_unless_disconnected_passes_the_work_s_error_on() -> None:
    async def work() -> None:
        raise InvalidRequest("bad")

    with pytest.raises(InvalidRequest):
        await unless_disconnected(Client().receive, work())


async def test_client_leaving_cancels_the_work_and_its_generations() -> None:
    backend = ScriptedBackend("m", script=lambda r: Script(("a", "b"), block_after=1))
    client = Client({"type": "http.request", "body": b"", "more_body": False})
    cancelled = asyncio.Event()

    async def work() -> list[ChoiceOutcome]:
        try:
            return await collect(await open_choices(backend, requests(2)), FirstToken())
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(unless_disconnected(client.receive, work()))
    await backend.calls.wait_for(lambda c: c.running == 2)
    client.left.set()
    with pytest.raises(ClientDisconnected):
        await asyncio.wait_for(task, 10)
    assert cancelled.is_set()
    assert backend.calls.running == 0 and len(backend.calls.abandoned) == 2
