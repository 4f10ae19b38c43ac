"""Seed statistics: mean, sample std and a Student-t 95% confidence interval; paired differences.

With n seeds, ``CI = mean ± t_{0.975, n-1} * std / sqrt(n)`` (std with ddof=1). A paired
difference (same seeds, e.g. KD student minus no-KD student) is summarised the same way
on the per-seed differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """``{"n", "mean", "std", "ci_low", "ci_high"}``; std and CI are NaN for a single value."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("summarize: no values")
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = float(x.std(ddof=1))
    from scipy.special import stdtrit  # Student-t quantile (what scipy.stats.t.ppf calls; 0.2 s to import, not 0.8)

    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values``, ties given the mean of the ranks they span (scipy's ``rankdata``, "average")."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])  # each run of equal values
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts[:-1] + starts[1:] + 1) / 2, np.diff(starts))
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation: the Pearson correlation of the average ranks (NaN if either is constant)."""
    if len(xs) != len(ys):
        raise ValueError(f"spearman: {len(xs)} values vs {len(ys)}")
    rx, ry = average_ranks(xs) - (len(xs) + 1) / 2, average_ranks(ys) - (len(ys) + 1) / 2
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denominator if denominator > 0 else math.nan


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Summary of ``a[i] - b[i]`` over paired runs (same seed i)."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} values vs {len(b)}; runs must be paired by seed")
    return summarize(np.asarray(a, float) - np.asarray(b, float), confidence)


FEW_SEEDS = 3  # below this many seeds a t-interval is very wide (t_{0.975,1} = 12.7)
BOUNDED = (0.0, 1.0)  # accuracy, macro-F1, AUROC as fractions: shown as [0, 100] points


def format_summary(
    s: dict[str, float], scale: float = 100.0, digits: int = 2, bounds: tuple[float, float] | None = None
) -> str:
    """``"mean ± std [ci_low, ci_high]"`` (scaled, e.g. accuracy in points).

    With ``bounds`` (e.g. :data:`BOUNDED` for accuracy) the shown interval is clipped to them and
    marked ``(clipped)``; the numbers in ``s`` (and in ``metrics.json``) stay the raw t-interval.
    """
    if math.isnan(s["std"]):
        return f"{s['mean'] * scale:.{digits}f}"
    low, high = s["ci_low"], s["ci_high"]
    clipped = False
    if bounds is not None and (low < bounds[0] or high > bounds[1]):
        clipped, low, high = True, max(low, bounds[0]), min(high, bounds[1])
    text = (
        f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f} "
        f"[{low * scale:.{digits}f}, {high * scale:.{digits}f}]"
    )
    return text + " (clipped)" if clipped else text


def few_seeds_caution(n: int) -> str | None:
    """A warning line when ``1 < n < 3`` seeds: a 95% t-interval from 2 values is ±12.7 standard errors."""
    if 1 < n < FEW_SEEDS:
        return (
            f"Caution: {n} seeds; t-intervals with fewer than {FEW_SEEDS} seeds are very wide "
            f"(t = {float(_t_quantile(0.975, n - 1)):.1f} standard errors); run more seeds (--seeds N)."
        )
    return None


def _t_quantile(q: float, dof: int) -> float:
    from scipy import stats as sps

    return float(sps.t.ppf(q, dof))
