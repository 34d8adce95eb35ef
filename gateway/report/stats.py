"""The statistics of the experiment report, on plain arrays (numpy, scipy).

- `bootstrap`: mean, p50 and p95 of a sample with percentile-bootstrap intervals, and the
  same for a treatment against a control (difference and ratio), vectorised over the
  resamples, in bounded chunks, from a seeded generator (the report is reproducible).
- `wilson` and `newcombe`: a proportion's interval and a difference of two proportions
  (Newcombe's hybrid score interval, built from the two Wilson intervals).
- `t_interval` and `welch`: a numeric mean and a difference of two means.
- `srm`: the sample-ratio-mismatch check (chi-square of the assignment counts against
  the configured weights).

Every interval is a dict `{"value", "low", "high"}` (None where it cannot be computed),
so that the report serialises as it is.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

STATISTICS = ("mean", "p50", "p95")
# resamples x sample size per chunk: bounds the memory of one bootstrap (8 M int64 indices)
CHUNK_ELEMENTS = 8_000_000
# resamples x sample size per statistic in all: bounds the time of a report over a big sample
BUDGET_ELEMENTS = 40_000_000
MIN_RESAMPLES = 200


@dataclass(frozen=True, slots=True)
class BootstrapSettings:
    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


def interval(value: float | None, low: float | None, high: float | None) -> dict[str, float | None]:
    def clean(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else float(x)

    return {"value": clean(value), "low": clean(low), "high": clean(high)}


def rng_for(seed: int, *key: str) -> np.random.Generator:
    """One generator per (seed, what is resampled): the same report twice gives the same
    intervals, and no two statistics share a stream."""
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(key).encode())])


def resamples_for(n: int, wanted: int) -> int:
    return max(MIN_RESAMPLES, min(wanted, BUDGET_ELEMENTS // max(n, 1))) if n else 0


def _statistics(values: np.ndarray) -> np.ndarray:
    """mean, p50, p95 along the last axis: shape (..., 3)."""
    mean = values.mean(axis=-1)
    p50, p95 = np.quantile(values, [0.5, 0.95], axis=-1)
    return np.stack([mean, p50, p95], axis=-1)


def _resampled(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The statistics of `resamples` bootstrap resamples: shape (resamples, 3)."""
    n = values.size
    rows = max(1, CHUNK_ELEMENTS // n)
    out = np.empty((resamples, len(STATISTICS)))
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = _statistics(values[idx])
    return out


def _bounds(boot: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    return low, high


def bootstrap(
    values: Sequence[float] | np.ndarray, resamples: int, settings: BootstrapSettings, *key: str
) -> np.ndarray | None:
    """mean, p50 and p95 of `resamples` bootstrap resamples, shape (resamples, 3), from
    the generator of (seed, key); None for fewer than 2 values. Draw a group's once and
    pass it to `summary` and `compare`: the report then resamples each group once."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return None
    return _resampled(arr, resamples, rng_for(settings.seed, *key))


def summary(
    values: Sequence[float] | np.ndarray,
    settings: BootstrapSettings,
    *key: str,
    boot: np.ndarray | None = None,
) -> dict[str, object]:
    """n, and mean/p50/p95 each with its bootstrap interval (`boot`: from `bootstrap`)."""
    arr = np.asarray(values, dtype=float)
    out: dict[str, object] = {"n": int(arr.size)}
    if arr.size == 0:
        for name in STATISTICS:
            out[name] = interval(None, None, None)
        return out
    point = _statistics(arr)
    if arr.size < 2:
        for i, name in enumerate(STATISTICS):
            out[name] = interval(point[i], None, None)
        return out
    if boot is None:
        resamples = resamples_for(arr.size, settings.resamples)
        boot = _resampled(arr, resamples, rng_for(settings.seed, *key))
    low, high = _bounds(boot, settings.confidence)
    for i, name in enumerate(STATISTICS):
        out[name] = interval(point[i], low[i], high[i])
    return out


def compare(
    treatment: Sequence[float] | np.ndarray,
    control: Sequence[float] | np.ndarray,
    settings: BootstrapSettings,
    *key: str,
    boot_t: np.ndarray | None = None,
    boot_c: np.ndarray | None = None,
) -> dict[str, dict[str, object]]:
    """For mean, p50 and p95: treatment minus control with a bootstrap interval (the two
    groups resampled independently), whether it excludes zero, and the ratio
    treatment / control with its interval."""
    t = np.asarray(treatment, dtype=float)
    c = np.asarray(control, dtype=float)
    out: dict[str, dict[str, object]] = {}
    if t.size < 2 or c.size < 2:
        for name in STATISTICS:
            out[name] = {**interval(None, None, None), "excludes_zero": None, "ratio": None}
        return out
    if boot_t is None or boot_c is None:
        resamples = min(
            resamples_for(t.size, settings.resamples), resamples_for(c.size, settings.resamples)
        )
        boot_t = _resampled(t, resamples, rng_for(settings.seed, *key, "treatment"))
        boot_c = _resampled(c, resamples, rng_for(settings.seed, *key, "control"))
    point_t, point_c = _statistics(t), _statistics(c)
    low, high = _bounds(boot_t - boot_c, settings.confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_low, r_high = _bounds(boot_t / boot_c, settings.confidence)
        ratio = point_t / point_c
    for i, name in enumerate(STATISTICS):
        out[name] = {
            **interval(point_t[i] - point_c[i], low[i], high[i]),
            "excludes_zero": bool(low[i] > 0 or high[i] < 0),
            "ratio": interval(ratio[i], r_low[i], r_high[i]),
        }
    return out


def _z(confidence: float) -> float:
    return float(sps.norm.ppf(1 - (1 - confidence) / 2))


def wilson_bounds(
    successes: np.ndarray | int, n: np.ndarray | int, confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised Wilson score interval: (p, low, high); n = 0 gives NaN."""
    k = np.asarray(successes, dtype=float)
    m = np.asarray(n, dtype=float)
    z = _z(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / m
        denom = 1 + z * z / m
        centre = (p + z * z / (2 * m)) / denom
        half = z * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / denom
    return p, np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def wilson(successes: int, n: int, confidence: float) -> dict[str, object]:
    p, low, high = wilson_bounds(successes, n, confidence)
    return {"n": n, "count": successes, **interval(float(p), float(low), float(high))}


def newcombe_bounds(
    k_t: np.ndarray | int,
    n_t: np.ndarray | int,
    k_c: np.ndarray | int,
    n_c: np.ndarray | int,
    confidence: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised difference p_t - p_c with Newcombe's hybrid score interval (method 10)."""
    p1, l1, u1 = wilson_bounds(k_t, n_t, confidence)
    p2, l2, u2 = wilson_bounds(k_c, n_c, confidence)
    d = p1 - p2
    low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, low, high


def newcombe(k_t: int, n_t: int, k_c: int, n_c: int, confidence: float) -> dict[str, object]:
    d, low, high = newcombe_bounds(k_t, n_t, k_c, n_c, confidence)
    return _difference(float(d), float(low), float(high))


def _difference(d: float, low: float, high: float) -> dict[str, object]:
    out: dict[str, object] = dict(interval(d, low, high))
    finite = math.isfinite(low) and math.isfinite(high)
    out["excludes_zero"] = bool(low > 0 or high < 0) if finite else None
    return out


def t_interval(values: Sequence[float] | np.ndarray, confidence: float) -> dict[str, object]:
    """Mean with Student's t interval."""
    arr = np.asarray(values, dtype=float)
    n = int(arr.size)
    if n == 0:
        return {"n": 0, **interval(None, None, None)}
    mean = float(arr.mean())
    if n < 2:
        return {"n": n, **interval(mean, None, None)}
    se = float(arr.std(ddof=1)) / math.sqrt(n)
    half = float(sps.t.ppf(1 - (1 - confidence) / 2, n - 1)) * se
    return {"n": n, **interval(mean, mean - half, mean + half)}


def welch(
    treatment: Sequence[float] | np.ndarray,
    control: Sequence[float] | np.ndarray,
    confidence: float,
) -> dict[str, object]:
    """Difference of means with the Welch-Satterthwaite t interval."""
    t = np.asarray(treatment, dtype=float)
    c = np.asarray(control, dtype=float)
    if t.size < 2 or c.size < 2:
        return {**interval(None, None, None), "excludes_zero": None}
    d = float(t.mean() - c.mean())
    vt, vc = t.var(ddof=1) / t.size, c.var(ddof=1) / c.size
    se = math.sqrt(vt + vc)
    if se == 0:
        return _difference(d, d, d) | {"excludes_zero": d != 0}
    df = (vt + vc) ** 2 / (vt**2 / (t.size - 1) + vc**2 / (c.size - 1))
    half = float(sps.t.ppf(1 - (1 - confidence) / 2, df)) * se
    return _difference(d, d - half, d + half)


def srm(
    counts: Mapping[str, int], weights: Mapping[str, float], threshold: float = 0.001
) -> dict[str, object]:
    """Chi-square goodness of fit of the assignment counts against the weights; a
    p-value below `threshold` flags a sample-ratio mismatch (the assignment or the
    recording is broken, and the comparison cannot be trusted)."""
    names = list(weights)
    observed = np.array([counts.get(name, 0) for name in names], dtype=float)
    total = float(observed.sum())
    share = {name: weights[name] / sum(weights.values()) for name in names}
    out: dict[str, object] = {
        "counts": {name: int(counts.get(name, 0)) for name in names},
        "expected_share": share,
        "threshold": threshold,
        "chi2": None,
        "p_value": None,
        "flagged": False,
    }
    if len(names) < 2 or total == 0:
        return out
    expected = np.array([share[name] * total for name in names])
    chi2, p = sps.chisquare(observed, expected)
    out.update(chi2=float(chi2), p_value=float(p), flagged=bool(p < threshold))
    return out
