"""Statistics: bootstrap confidence intervals over sentences and paired tests between programs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def paired_difference(values_a: Sequence[float | None], values_b: Sequence[float | None], *, seed: int = 0,
                      confidence: float = 0.95) -> dict[str, float | None]:
    """Mean difference a - b over the sentences where both exist, with a paired percentile bootstrap CI and
    the two-sided p-value of a paired permutation (sign-flip) test.

    >>> d = paired_difference([1.0, 1.1, 0.9, 1.0, 1.2, 0.8], [0.0, 0.1, -0.1, 0.0, 0.1, 0.0])
    >>> round(d["difference"], 3), d["p_value"] < 0.05, d["n"]
    (0.983, True, 6)
    """
    pairs = np.asarray([(x, y) for x, y in zip(values_a, values_b, strict=True)
                        if x is not None and y is not None], float)
    if len(pairs) < 2:
        return {"difference": None, "ci_low": None, "ci_high": None, "p_value": None, "n": len(pairs)}
    a, b = pairs[:, 0], pairs[:, 1]
    diff = float(np.mean(a - b))
    if np.ptp(a - b) == 0:  # every pair differs alike: nothing to resample
        low = high = diff
        p = 1.0 if diff == 0 else float(2 * 0.5 ** len(a))
    else:
        rng = np.random.default_rng(seed)
        boot = stats.bootstrap((a, b), _mean_difference, paired=True, vectorized=True, n_resamples=N_RESAMPLES,
                               confidence_level=confidence, method="percentile", random_state=rng)
        low, high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
        p = float(stats.permutation_test((a, b), _mean_difference, permutation_type="samples", vectorized=True,
                                         n_resamples=N_RESAMPLES, alternative="two-sided", random_state=rng).pvalue)
    return {"difference": diff, "ci_low": low, "ci_high": high, "p_value": min(1.0, p), "n": int(len(a))}


def _ratio_of_means(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def paired_ratio(values_a: Sequence[float | None], values_b: Sequence[float | None], *, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, float | None]:
    """Mean of a over mean of b on the sentences where both exist (a's size as a share of b's), with a paired
    percentile bootstrap CI; None when b's mean is not positive.

    >>> r = paired_ratio([0.1, 0.3, 0.2, 0.2, None], [0.4, 0.5, 0.3, 0.6, 0.2])
    >>> round(r["ratio"], 3), r["ci_low"] < r["ratio"] < r["ci_high"], r["n"]
    (0.444, True, 4)
    """
    pairs = np.asarray([(x, y) for x, y in zip(values_a, values_b, strict=True)
                        if x is not None and y is not None], float)
    if len(pairs) < 2 or np.mean(pairs[:, 1]) <= 0:
        return {"ratio": None, "ci_low": None, "ci_high": None, "n": len(pairs)}
    a, b = pairs[:, 0], pairs[:, 1]
    boot = stats.bootstrap((a, b), _ratio_of_means, paired=True, vectorized=True, n_resamples=N_RESAMPLES,
                           confidence_level=confidence, method="percentile", random_state=np.random.default_rng(seed))
    return {"ratio": float(np.mean(a) / np.mean(b)), "ci_low": float(boot.confidence_interval.low),
            "ci_high": float(boot.confidence_interval.high), "n": int(len(a))}


def paired_accuracy(correct_a: Sequence[float | None], correct_b: Sequence[float | None], *,
                    seed: int = 0) -> dict[str, float | int | None]:
    """Accuracy a - b on the sentences both answered (1.0 right, 0.0 wrong, None unanswered): the paired
    bootstrap difference and permutation p of :func:`paired_difference`, with McNemar's exact test beside it.

    >>> d = paired_accuracy([1.0] * 12 + [None], [0.0] * 12 + [1.0])
    >>> d["difference"], d["n"], d["only_a_correct"], d["mcnemar_p_value"] < 0.01
    (1.0, 12, 12, True)
    """
    both = [(a, b) for a, b in zip(correct_a, correct_b, strict=True) if a is not None and b is not None]
    exact = mcnemar([a == 1 for a, _ in both], [b == 1 for _, b in both])
    return {**paired_difference([a for a, _ in both], [b for _, b in both], seed=seed),
            "mcnemar_p_value": exact["p_value"], "only_a_correct": exact["only_a"],
            "only_b_correct": exact["only_b"]}
