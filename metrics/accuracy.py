"""Accuracy over answered examples; unanswered (failed) ones are excluded and counted, never scored."""

from __future__ import annotations

from collections.abc import Sequence


def accuracy(predicted: Sequence[int | None], gold: Sequence[int]) -> tuple[float | None, int]:
    """(accuracy over examples with a prediction, number of such examples).

    >>> accuracy([1, 0, None, 1], [1, 1, 0, 1])
    (0.6666666666666666, 3)
    >>> accuracy([None], [1])
    (None, 0)
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold labels")
    scored = [(p, g) for p, g in zip(predicted, gold, strict=True) if p is not None]
    if not scored:
        return None, 0
    return sum(p == g for p, g in scored) / len(scored), len(scored)


def auc(scores: Sequence[float], gold: Sequence[int]) -> float | None:
    """Area under the ROC curve of a score for the positive class (Mann-Whitney U; ties count half).

    >>> auc([0.9, 0.8, 0.1, 0.4], [1, 1, 0, 0])
    1.0
    >>> auc([0.5, 0.5], [1, 0])
    0.5
    """
    from scipy.stats import mannwhitneyu

    positives = [s for s, g in zip(scores, gold, strict=True) if g == 1]
    negatives = [s for s, g in zip(scores, gold, strict=True) if g == 0]
    if not positives or not negatives:
        return None
    u = mannwhitneyu(positives, negatives, alternative="two-sided").statistic
    return float(u / (len(positives) * len(negatives)))
