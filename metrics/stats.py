"""Statistics: bootstrap confidence intervals over sentences and paired tests between programs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

N_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A mean over sentences with its 95 % bootstrap CI and how many sentences it used/excluded."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    excluded: int

    def as_dict(self, prefix: str) -> dict[str, float | int | None]:
        return {prefix: self.mean, f"{prefix}_ci_low": self.low, f"{prefix}_ci_high": self.high,
                f"{prefix}_n": self.n, f"{prefix}_excluded": self.excluded}


def mean_ci(values: Sequence[float | None], *, seed: int = 0, confidence: float = 0.95) -> Estimate:
    """Mean of the non-missing values with a percentile bootstrap CI (resampling sentences).

    >>> e = mean_ci([1.0, 1.0, None])
    >>> (e.mean, e.low, e.high, e.n, e.excluded)
    (1.0, 1.0, 1.0, 2, 1)
    """
    kept = np.asarray([v for v in values if v is not None and not np.isnan(v)], float)
    excluded = len(values) - kept.size
    if kept.size == 0:
        return Estimate(None, None, None, 0, excluded)
    if kept.size == 1 or np.ptp(kept) == 0:
        return Estimate(float(kept.mean()), float(kept.mean()), float(kept.mean()), int(kept.size), excluded)
    result = stats.bootstrap((kept,), np.mean, n_resamples=N_RESAMPLES, confidence_level=confidence,
                             method="percentile", random_state=np.random.default_rng(seed))
    return Estimate(float(kept.mean()), float(result.confidence_interval.low),
                    float(result.confidence_interval.high), int(kept.size), excluded)


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, float]:
    """Exact McNemar test on paired correctness (binomial on the discordant pairs).

    >>> mcnemar([True] * 10, [False] * 10)["p_value"] < 0.01
    True
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


def paired_bootstrap(values_a: Sequence[float | None], values_b: Sequence[float | None], *, seed: int = 0) -> dict[str, float | None]:
    """Mean difference a - b over sentences where both exist, its 95 % CI and a two-sided p-value."""
    pairs = np.asarray([(x, y) for x, y in zip(values_a, values_b) if x is not None and y is not None], float)
    if len(pairs) < 2:
        return {"difference": None, "ci_low": None, "ci_high": None, "p_value": None, "n": len(pairs)}
    diff = pairs[:, 0] - pairs[:, 1]
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (N_RESAMPLES, len(diff)))].mean(axis=1)
    p = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
    return {"difference": float(diff.mean()), "ci_low": float(np.percentile(means, 2.5)),
            "ci_high": float(np.percentile(means, 97.5)), "p_value": float(p), "n": int(len(diff))}
