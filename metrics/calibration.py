"""Calibration of a stated confidence or a probability: ECE (equal-width bins, stated), Brier, and the label
decision rules (generated, logprob, contextual and batch calibration) side by side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from metrics.accuracy import accuracy, auc
from metrics.stats import mean_ci

ECE_BINS = 10


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], *,
                               n_bins: int = ECE_BINS) -> float:
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


def reliability_curve(confidence: Sequence[float], correct: Sequence[bool], *,
                      n_bins: int = ECE_BINS) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) for each non-empty equal-width confidence bin: a reliability diagram.

    >>> reliability_curve([0.9, 0.9, 0.6, 0.6], [True, False, True, True])
    [(0.6, 1.0, 2), (0.9, 0.5, 2)]
    """
    c, ok = np.asarray(confidence, float), np.asarray(correct, float)
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)
    return [(round(float(c[bins == b].mean()), 6), float(ok[bins == b].mean()), int((bins == b).sum()))
            for b in np.unique(bins)]


def brier_score(p_positive: Sequence[float], gold: Sequence[int]) -> float:
    """Mean squared error of P(positive) against the 0/1 gold label.

    >>> brier_score([1.0, 0.5], [1, 0])
    0.125
    """
    p, y = np.asarray(p_positive, float), np.asarray(gold, float)
    return float(np.mean((p - y) ** 2))


def decision_rules(odds: Sequence[float | None], generated: Sequence[str | None], gold: Sequence[int],
                   content_free_odds: Sequence[float]) -> dict[str, dict[str, Any]]:
    """Every decision rule side by side from one pass: accuracy, AUC, positive share, ECE.

    ``odds`` are the label log-odds read at the slot (None for failures); the calibrated rules add
    minus the mean log-odds of the content-free inputs (contextual) or of this batch (batch).
    """
    known = [o for o in odds if o is not None]
    biases = {"generated": None, "logprob": 0.0,
              "contextual": -sum(content_free_odds) / len(content_free_odds) if content_free_odds else None,
              "batch": -sum(known) / len(known) if known else None}
    out: dict[str, dict[str, Any]] = {}
    for rule, bias in biases.items():
        if rule != "generated" and bias is None:
            out[rule] = {"unavailable": "no label log-probabilities"}
            continue
        if rule == "generated":
            labels = [None if g is None else int(g == "positive") for g in generated]
        else:
            labels = [None if o is None else int(o + bias > 0) for o in odds]
        acc, scored = accuracy(labels, gold)
        confidences, correct = [], []
        for o, label, y in zip(odds, labels, gold, strict=True):
            if o is not None and label is not None and rule != "generated":
                p_pos = 1 / (1 + math.exp(-(o + bias)))
                confidences.append(p_pos if label == 1 else 1 - p_pos)
                correct.append(label == y)
        out[rule] = {
            "accuracy": acc,
            "accuracy_ci": _ci([None if p is None else float(p == y) for p, y in zip(labels, gold, strict=True)]),
            "auc": auc([o for o in odds if o is not None],
                       [y for o, y in zip(odds, gold, strict=True) if o is not None]),
            "positive_share": (sum(label == 1 for label in labels if label is not None) / scored) if scored else None,
            "ece": expected_calibration_error(confidences, correct) if confidences else None,
            "bias": bias, "n_scored": scored,
        }
    return out


def _ci(values: Sequence[float | None]) -> list[float | None]:
    estimate = mean_ci(values)
    return [estimate.low, estimate.high]
