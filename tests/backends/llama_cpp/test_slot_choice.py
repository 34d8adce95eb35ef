"""The engine's choice of a slot for a new prompt (`Engine._best_slot`), on its own: an
Engine over stand-ins for the model and context (the choice reads neither), with the
slots' occupancy and cached tokens set by hand."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from backends.llama_cpp.engine import Engine
from backends.llama_cpp.slots import MIN_PREFIX_REUSE

BUSY = object()  # any running sequence


def engine(slots: list[Any], cached: list[list[int]] | None = None) -> Engine:
    ctx: Any = SimpleNamespace(n_seq=len(slots))
    e = Engine(model=None, ctx=ctx, n_ctx_seq=64, max_queue=4)  # type: ignore[arg-type]
    e._slots = list(slots)
    if cached is not None:
        e._cached = [list(c) for c in cached]
    return e


PROMPT = list(range(100, 100 + 3 * MIN_PREFIX_REUSE))


@pytest.mark.parametrize(
    ("slots", "expected"),
    [
        ([None, None, None, None], 0),  # all free: the lowest
        ([BUSY, None, None, None], 1),  # next to the running one: still one run
        ([BUSY, None, BUSY, None], 1),  # fills the gap: one run instead of two
        ([None, None, BUSY, None], 1),  # either neighbour keeps one run: the lowest
        ([None, BUSY, BUSY, BUSY], 0),  # the only free slot
        ([BUSY, BUSY, None, BUSY, None], 2),  # joins both runs
        ([None, None, None, BUSY, None, BUSY], 4),  # not the lowest: joins two runs
    ],
)
def test_without_reuse_the_busy_slots_stay_in_the_fewest_runs(
    slots: list[Any], expected: int
) -> None:
    assert engine(slots)._best_slot(PROMPT) == expected


def test_a_slot_holding_the_prompt_s_prefix_wins() -> None:
    cached = [[], [], [], [*PROMPT[: MIN_PREFIX_REUSE + 4], 1, 2, 3]]
    assert engine([BUSY, None, None, None], cached)._best_slot(PROMPT) == 3


def test_the_longest_shared_prefix_wins() -> None:
    cached = [PROMPT[:MIN_PREFIX_REUSE], [], PROMPT[: 2 * MIN_PREFIX_REUSE], PROMPT[:20]]
    assert engine([None, None, None, None], cached)._best_slot(PROMPT) == 2


def test_a_short_shared_prefix_is_chance_and_ignored() -> None:
    cached = [[], [], [], PROMPT[: MIN_PREFIX_REUSE - 1]]
    assert engine([BUSY, None, None, None], cached)._best_slot(PROMPT) == 1


def test_a_busy_slot_is_never_chosen_whatever_it_caches() -> None:
    cached = [PROMPT, [], [], []]
    assert engine([BUSY, None, None, None], cached)._best_slot(PROMPT) == 1
    assert engine([None, BUSY], [PROMPT, PROMPT])._best_slot(PROMPT) == 0
