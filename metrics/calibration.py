"""Calibration of a stated confidence or a probability: ECE (equal-width bins, stated) and Brier."""

from __future__ import annotations

from typing import Sequence

import numpy as np

ECE_BINS = 10


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], *, n_bins: int = ECE_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1] (a confidence of exactly 1 falls in the last bin).

    >>> round(expected_calibration_error([0.9, 0.9, 0.6, 0.6], [True, False, True, True]), 3)
    0.4
    """
    c = np.asarray(confidence, float)
    ok = np.asarray(correct, float)
    if c.size == 0:
        raise ValueError("ECE of no predictions")
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        members = bins == b
        total += members.sum() / c.size * abs(ok[members].mean() - c[members].mean())
    return float(total)


def brier_score(p_positive: Sequence[float], gold: Sequence[int]) -> float:
    """Mean squared error of P(positive) against the 0/1 gold label.

    >>> brier_score([1.0, 0.5], [1, 0])
    0.125
    """
    p, y = np.asarray(p_positive, float), np.asarray(gold, float)
    return float(np.mean((p - y) ** 2))
