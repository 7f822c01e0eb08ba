"""Seed statistics: mean ± sample standard deviation, and a paired difference with a t-interval."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float  # sample standard deviation (n − 1); NaN with fewer than two values
    n: int


@dataclass(frozen=True)
class PairedDifference:
    """mean(a − b) over the seeds both have, with a two-sided t-interval (NaN bounds with n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def mean_std(values: Iterable[float]) -> MeanStd:
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return MeanStd(math.nan, math.nan, 0)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    return MeanStd(mean, std, n)


def t_quantile(p: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, dof))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> PairedDifference:
    """a and b map seed -> value; only seeds present (and finite) in both are paired."""
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    diffs = mean_std(a[s] - b[s] for s in seeds)
    if diffs.n < 2:
        return PairedDifference(diffs.mean, math.nan, math.nan, diffs.n, confidence)
    half = t_quantile(0.5 + confidence / 2, diffs.n - 1) * diffs.std / math.sqrt(diffs.n)
    return PairedDifference(diffs.mean, diffs.mean - half, diffs.mean + half, diffs.n, confidence)
