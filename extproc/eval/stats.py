"""Statistics for eval: means, percentiles and paired-bootstrap 95% intervals (seeded, pure Python)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def bootstrap_mean(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> Interval:
    """95% percentile-bootstrap interval of the mean."""
    if not values:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return Interval(mean(values), percentile(means, 2.5), percentile(means, 97.5))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0) -> Interval:
    """95% interval of mean(a - b), resampling items (pairs) so per-item difficulty cancels out."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    return bootstrap_mean([x - y for x, y in zip(a, b, strict=True)], resamples, seed)
