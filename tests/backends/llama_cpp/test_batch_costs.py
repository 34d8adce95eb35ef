"""The engine's choice between decoding the running sequences as one batch or one at a
time (`BatchCosts`), from measured costs."""

from __future__ import annotations

from backends.llama_cpp.steps import BatchCosts


def test_measures_the_batch_first_then_one_at_a_time() -> None:
    costs = BatchCosts()
    assert not costs.split(1)  # one sequence: nothing to split
    assert not costs.split(4)  # no figures yet: the batch first
    costs.record(4, 0.100)
    assert costs.split(4)  # the batch is known, a single token is not: try it
    costs.record(1, 0.010)
    assert costs.split(4)  # 4 x 10 ms < 90 % of 100 ms


def test_keeps_the_batch_when_it_is_not_clearly_slower() -> None:
    costs = BatchCosts()
    costs.record(1, 0.010)
    costs.record(8, 0.075)  # 8 x 10 ms = 80 ms: one at a time is slower
    assert not costs.split(8)
    costs = BatchCosts()
    costs.record(1, 0.010)
    costs.record(2, 0.021)  # 20 ms vs 21 ms: within the margin, keep batching
    assert not costs.split(2)


def test_tries_the_other_way_now_and_then() -> None:
    costs = BatchCosts()
    costs.record(1, 0.010)
    costs.record(2, 0.050)
    choices = [costs.split(2) for _ in range(BatchCosts.EXPLORE_EVERY * 2)]
    assert choices.count(False) == 2  # one batch per EXPLORE_EVERY steps
    assert choices[BatchCosts.EXPLORE_EVERY - 1] is False


def test_follows_a_change_in_cost() -> None:
    costs = BatchCosts()
    costs.record(1, 0.010)
    costs.record(2, 0.050)
    assert costs.split(2)
    for _ in range(20):  # the machine got busy: single tokens now cost much more
        costs.record(1, 0.040)
    assert not costs.split(2)
    estimate = costs.estimate(1)
    assert estimate is not None and 0.035 < estimate <= 0.040
