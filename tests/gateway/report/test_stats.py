"""The report's statistics against known answers: seeded synthetic samples whose true
difference is known (treatment 20 % slower, error rate 2 % vs 5 %), a zero difference
over 200 seeded simulations, and the sample-ratio-mismatch check."""

from __future__ import annotations

import math

import numpy as np

from gateway.report.stats import (
    BootstrapSettings,
    compare,
    newcombe,
    newcombe_bounds,
    srm,
    summary,
    t_interval,
    welch,
    wilson,
    wilson_bounds,
)

MU, SIGMA = 6.0, 0.5  # log-normal total latency in ms: mean exp(6.125), about 457 ms
TRUE_MEAN = math.exp(MU + SIGMA**2 / 2)


def latencies(rng: np.random.Generator, n: int, factor: float = 1.0) -> np.ndarray:
    return rng.lognormal(MU, SIGMA, n) * factor


def covers(stat: dict[str, object], truth: float) -> bool:
    return stat["low"] <= truth <= stat["high"]  # type: ignore[operator]


def test_a_treatment_20_percent_slower_is_measured_with_intervals_that_cover_the_truth() -> None:
    rng = np.random.default_rng(12)
    control, treatment = latencies(rng, 1500), latencies(rng, 1500, 1.2)
    diff = compare(treatment, control, BootstrapSettings(1000, 0.95, 7), "exp", "t", "total_ms")
    assert covers(diff["mean"], 0.2 * TRUE_MEAN)
    assert covers(diff["mean"]["ratio"], 1.2)  # type: ignore[arg-type]
    assert diff["mean"]["excludes_zero"] is True
    # a log-normal's quantiles scale with it too: p50 and p95 are 20 % higher as well
    assert covers(diff["p50"], 0.2 * math.exp(MU))
    assert covers(diff["p95"], 0.2 * math.exp(MU + 1.6448536 * SIGMA))
    for name in ("mean", "p50", "p95"):
        assert covers(diff[name]["ratio"], 1.2)  # type: ignore[arg-type]
    one = summary(control, BootstrapSettings(1000, 0.95, 7), "exp", "c", "total_ms")
    assert one["n"] == 1500
    assert covers(one["mean"], TRUE_MEAN)  # type: ignore[arg-type]
    assert covers(one["p50"], math.exp(MU))  # type: ignore[arg-type]


def test_the_bootstrap_is_reproducible_and_depends_on_its_seed() -> None:
    rng = np.random.default_rng(3)
    a, b = latencies(rng, 300), latencies(rng, 300)
    first = compare(a, b, BootstrapSettings(500, 0.95, 1), "e", "v", "m")
    assert compare(a, b, BootstrapSettings(500, 0.95, 1), "e", "v", "m") == first
    assert compare(a, b, BootstrapSettings(500, 0.95, 2), "e", "v", "m") != first


def test_error_rates_of_2_and_5_percent_are_told_apart_with_covering_intervals() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    k_c, k_t = int(rng.binomial(n, 0.02)), int(rng.binomial(n, 0.05))
    assert covers(wilson(k_c, n, 0.95), 0.02)
    assert covers(wilson(k_t, n, 0.95), 0.05)
    diff = newcombe(k_t, n, k_c, n, 0.95)
    assert covers(diff, 0.03)
    assert diff["excludes_zero"] is True


def test_wilson_and_newcombe_cover_the_truth_in_about_95_percent_of_10000_samples() -> None:
    rng = np.random.default_rng(11)
    n = 500
    k_c, k_t = rng.binomial(n, 0.02, 10_000), rng.binomial(n, 0.05, 10_000)
    _, low, high = wilson_bounds(k_t, n, 0.95)
    assert 0.93 <= np.mean((low <= 0.05) & (high >= 0.05)) <= 0.975
    _, low, high = newcombe_bounds(k_t, n, k_c, n, 0.95)
    assert 0.93 <= np.mean((low <= 0.03) & (high >= 0.03)) <= 0.99


def test_a_zero_difference_is_not_flagged_in_at_least_95_percent_of_200_simulations() -> None:
    """Both variants drawn from one distribution. A calibrated 95 % interval flags about
    10 of 200 (binomial spread about 3); the simulations are seeded, so the count is
    fixed: 8 (mean), 9 (p95), 7 (error rate) with these seeds."""
    settings = BootstrapSettings(resamples=200, confidence=0.95, seed=0)
    flagged_latency = flagged_p95 = 0
    rng = np.random.default_rng(2026)
    counts = rng.binomial(400, 0.05, size=(200, 2))
    for sim in range(200):
        sim_rng = np.random.default_rng([0, sim])
        a, b = latencies(sim_rng, 300), latencies(sim_rng, 300)
        diff = compare(a, b, BootstrapSettings(1000, 0.95, sim), "e", "t", "total_ms")
        flagged_latency += bool(diff["mean"]["excludes_zero"])
        flagged_p95 += bool(diff["p95"]["excludes_zero"])
    _, low, high = newcombe_bounds(counts[:, 0], 400, counts[:, 1], 400, settings.confidence)
    flagged_rate = int(np.sum((low > 0) | (high < 0)))
    assert flagged_latency <= 10, flagged_latency
    assert flagged_p95 <= 10, flagged_p95
    assert flagged_rate <= 10, flagged_rate
    # and the same check sees a real difference: it is not a test that cannot fail
    a, b = latencies(rng, 300), latencies(rng, 300, 1.2)
    assert compare(b, a, settings, "e", "t", "total_ms")["mean"]["excludes_zero"] is True


def test_srm_flags_a_45_55_split_of_10000_and_not_a_fair_one() -> None:
    weights = {"control": 50.0, "treatment": 50.0}
    skewed = srm({"control": 4500, "treatment": 5500}, weights)
    assert skewed["flagged"] is True
    assert skewed["p_value"] < 1e-20  # type: ignore[operator]
    fair = srm({"control": 5000, "treatment": 5000}, weights)
    assert fair["flagged"] is False and fair["p_value"] == 1.0
    noisy = srm({"control": 5050, "treatment": 4950}, weights)  # p about 0.32
    assert noisy["flagged"] is False
    # the weights are what the counts are compared with
    assert (
        srm({"control": 4500, "treatment": 5500}, {"control": 45, "treatment": 55})["flagged"]
        is False
    )
    assert srm({"control": 0, "treatment": 0}, weights)["p_value"] is None


def test_numeric_feedback_has_a_t_interval_and_a_welch_difference() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.normal(3.0, 1.0, 400), rng.normal(3.5, 1.0, 400)
    mean = t_interval(a, 0.95)
    assert mean["n"] == 400 and covers(mean, 3.0)
    diff = welch(b, a, 0.95)
    assert covers(diff, 0.5) and diff["excludes_zero"] is True
    assert t_interval([], 0.95)["value"] is None
    assert welch([1.0], a, 0.95)["excludes_zero"] is None
