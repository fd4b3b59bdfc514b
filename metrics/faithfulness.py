"""Faithfulness of an explanation: what happens to the model's own prediction when the tokens it
called important are removed or kept. Pure functions of recorded replies (digest section 2.1).

Per sentence with n tokens and ranking r (positions, most important first), the caller records:
``original`` = reply on x; ``removed[k-1]`` = reply on x without r1..rk (k = 1..n, k = n is the
empty text); ``kept[k-1]`` = reply on x with only r1..rk (k = 1..n-1); ``single[i]`` = reply on x
without token i. ``perturbation_plan`` lists exactly those texts' position sets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from metrics.modes import MetricMode

ERASER_BINS = (0.01, 0.05, 0.10, 0.20, 0.50)


@dataclass(frozen=True)
class Reply:
    """A model's answer reduced to numbers: label (1 pos, 0 neg, None = failed), confidence, P(positive)."""

    label: int | None
    confidence: float | None
    p: float | None

    @property
    def failed(self) -> bool:
        return self.label is None or self.p is None


STUDY_DEFAULT = Reply(0, 0.5, 0.5)  # the study's parse-failure default


def rank_positions(values: Sequence[float | None], *, predicted: int | None, mode: MetricMode,
                   rng: np.random.Generator | None = None) -> list[int]:
    """Positions from most to least important.

    compat: descending signed value (most positive first), ties broken by U(0, noise) noise.
    corrected: descending value toward the predicted class, missing values last, ties by position.

    >>> from metrics.modes import CORRECTED
    >>> rank_positions([0.1, -0.9, 0.5], predicted=0, mode=CORRECTED)
    [1, 0, 2]
    """
    if mode.class_aware:
        sign = -1.0 if predicted == 0 else 1.0
        keyed = [(-(sign * v) if v is not None else math.inf, i) for i, v in enumerate(values)]
        return [i for _, i in sorted(keyed)]
    noise = ((rng or np.random.default_rng(0)).uniform(0, mode.noise, len(values)) if mode.noise
             else np.zeros(len(values)))
    scored = [(v if v is not None else 0.0) + float(e) for v, e in zip(values, noise, strict=True)]
    return sorted(range(len(values)), key=lambda i: -scored[i])


Perturbation = tuple[str, tuple[int, ...]]  # ("delete" | "keep", positions in ascending order)
PROTOCOLS = ("all", "bins", "single-step")
FAITHFULNESS_METRICS = ("comprehensiveness", "sufficiency", "comprehensiveness_bins", "sufficiency_bins",
                        "df_mit", "df_frac", "rankdel")


def _op(kind: str, positions: Sequence[int]) -> Perturbation:
    return kind, tuple(sorted(positions))


def perturbation_plan(n: int, ranking: Sequence[int]) -> dict[str, list[Perturbation]]:
    """The position sets each metric needs: ("delete" | "keep", positions) per reply slot.

    >>> perturbation_plan(3, [2, 0, 1])["removed"][:2]
    [('delete', (2,)), ('delete', (0, 2))]
    """
    if sorted(ranking) != list(range(n)):
        raise ValueError(f"ranking must be a permutation of 0..{n - 1}, got {list(ranking)}")
    return {
        "removed": [_op("delete", ranking[:k]) for k in range(1, n + 1)],
        "kept": [_op("keep", ranking[:k]) for k in range(1, n)],
        "single": [_op("delete", (i,)) for i in range(n)],
    }


def bin_sizes(n: int, bins: Sequence[float] = ERASER_BINS) -> list[int]:
    """How many top tokens each ERASER bin removes or keeps: max(1, ceil(b * n)), at most n.

    >>> bin_sizes(18)
    [1, 1, 2, 4, 9]
    """
    return [min(n, max(1, math.ceil(b * n))) for b in bins]


def complete_ranking(values: Sequence[float | None], ranking: Sequence[int] | None, n: int, predicted: int | None,
                     mode: MetricMode, rng: np.random.Generator) -> list[int]:
    """The full ranking a metric consumes: a recorded one as given; a top-k one padded with the other positions
    in random order (as the study's 2024 code pads it); otherwise derived from the values by the mode.

    >>> from metrics.modes import CORRECTED
    >>> complete_ranking([0.2, 0.9, -0.5], None, 3, 1, CORRECTED, np.random.default_rng(0))
    [1, 0, 2]
    """
    if ranking is not None and len(ranking) == n:
        return list(ranking)
    if ranking is not None:
        rest = [i for i in range(n) if i not in set(ranking)]
        return list(ranking) + [int(i) for i in rng.permutation(rest)]
    return rank_positions(values, predicted=predicted, mode=mode, rng=rng)


def plan(n: int, order: Sequence[int], protocol: str) -> list[Perturbation]:
    """Every perturbation one sentence's metrics need under a protocol, without repeats.

    ``all``: the study's five metrics (every deletion count, every kept prefix, each single deletion and
    the empty text); ``bins``: ERASER's binned comprehensiveness and sufficiency only (about 10 texts: the
    affordable objective inside an optimiser); ``single-step``: the paper's top-k protocol (``order`` is
    the k words: all deleted at once, or kept alone).

    >>> plan(3, [2, 0, 1], "single-step")
    [('delete', (0, 1, 2)), ('keep', (0, 1, 2))]
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown faithfulness protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    if protocol == "single-step":
        return [_op("delete", order), _op("keep", order)]
    if protocol == "bins":
        ks = sorted(set(bin_sizes(n)))
        return list(dict.fromkeys([_op("delete", order[:k]) for k in ks] + [_op("keep", order[:k]) for k in ks
                                                                              if k < n]))
    steps = perturbation_plan(n, order)
    return list(dict.fromkeys(steps["removed"] + steps["kept"] + steps["single"] + [_op("keep", ())]))


def rank_values(order: Sequence[int], n: int) -> list[float]:
    """Values implied by a ranking alone (first = highest), for rank-based correlation.

    >>> rank_values([2, 0, 1], 3)
    [2.0, 1.0, 3.0]
    """
    values = [0.0] * n
    for r, i in enumerate(order):
        values[i] = float(n - r)
    return values


def score(original: Reply | None, replies: Mapping[Perturbation, Reply | None], n: int, order: Sequence[int],
          values: Sequence[float | None], mode: MetricMode, protocol: str,
          rng: np.random.Generator) -> dict[str, float | None]:
    """One explanation's metrics on one sentence from the replies to its :func:`plan` (None = not computable).

    ``rng`` continues the stream :func:`complete_ranking` drew from (compat's RankDel noise).
    """
    empty: dict[str, float | None] = {name: None for name in FAITHFULNESS_METRICS}
    if original is None or n == 0:
        return empty
    predicted = original.label if original.label is not None else 0
    if protocol == "single-step":
        removed, kept = replies[_op("delete", order)], replies[_op("keep", order)]
        return {**empty, "comprehensiveness": single_step(original, removed, mode, predicted),
                "sufficiency": single_step(original, kept, mode, predicted, absolute=mode.sufficiency_absolute),
                "df_mit": decision_flip_mit(original, removed, mode)}
    if protocol == "bins":
        ks = set(bin_sizes(n))
        removed_b = [replies[_op("delete", order[:k])] if k in ks else None for k in range(1, n + 1)]
        kept_b = [replies[_op("keep", order[:k])] if k in ks else None for k in range(1, n)]
        comp_bins, suff_bins = eraser_bins(original, removed_b, kept_b, mode)
        return {**empty, "comprehensiveness_bins": comp_bins, "sufficiency_bins": suff_bins}
    steps = {key: [replies[p] for p in items] for key, items in perturbation_plan(n, order).items()}
    removed, kept, single = steps["removed"], steps["kept"], steps["single"]
    ordered_values = values if any(v is not None for v in values) else rank_values(order, n)
    comp_bins, suff_bins = eraser_bins(original, removed, kept, mode)
    rankdel, ties = deletion_rank_correlation(original, single, ordered_values, mode, rng)
    return {
        "comprehensiveness": comprehensiveness(original, removed, mode),
        "sufficiency": sufficiency(original, kept, replies[_op("keep", ())], mode),
        "comprehensiveness_bins": comp_bins,
        "sufficiency_bins": suff_bins,
        "df_mit": decision_flip_mit(original, removed[0], mode),
        "df_frac": decision_flip_fraction(original, removed, mode),
        "rankdel": rankdel,
        "rankdel_tied_share": ties,
    }


def single_step(original: Reply, other: Reply | None, mode: MetricMode, predicted: int, *,
                absolute: bool = False) -> float | None:
    """The paper-era top-k protocol: the drop when all k words are deleted at once (or kept alone).

    >>> from metrics.modes import CORRECTED
    >>> single_step(Reply(0, 0.8, 0.2), Reply(1, 0.6, 0.6), CORRECTED, 0)
    0.4
    """
    if other is None or other.failed or original.failed:
        return None
    diff = _prob(original, mode, predicted) - _prob(other, mode, predicted)
    return abs(diff) if absolute else diff


def _prob(reply: Reply | None, mode: MetricMode, predicted: int) -> float | None:
    """P(positive), or P(predicted class) in class-aware mode; None for a failure (corrected mode)
    or a reply that was never recorded (None)."""
    if reply is None:
        return None
    if reply.failed:
        if not mode.failure_as_default:
            return None
        reply = STUDY_DEFAULT
    return (1.0 - reply.p if predicted == 0 else reply.p) if mode.class_aware else reply.p


def _fix(reply: Reply | None, mode: MetricMode) -> Reply | None:
    if reply is None:
        return None
    return STUDY_DEFAULT if reply.failed and mode.failure_as_default else reply


def comprehensiveness(original: Reply | None, removed: Sequence[Reply | None], mode: MetricMode) -> float | None:
    """AOPC over every deletion count k = 1..n, divided by n + 1 (the study's form)."""
    original = _fix(original, mode)
    if original is None or original.failed:
        return None
    n = len(removed)
    if mode.p0_reconverted:
        # As coded: the original's probability is converted inside the loop and overwritten.
        label, prob, total = original.label, original.confidence, 0.0
        for k in range(n - 1):
            prob = prob if label == 1 else 1.0 - prob
            p_k = _prob(removed[k], mode, label)
            if p_k is None:
                return None
            total += prob - p_k
        total += 0.5 if mode.empty_term_plus_half else prob - 0.5
        return total / (n + 1)
    predicted = original.label
    p0 = _prob(original, mode, predicted)
    terms = []
    for k in range(n):
        if k == n - 1 and mode.empty_assumed_half:
            terms.append(0.5 if mode.empty_term_plus_half else p0 - 0.5)
            continue
        p_k = _prob(removed[k], mode, predicted)
        if p_k is None:
            return None
        terms.append(p0 - p_k)
    return sum(terms) / (n + 1)


def sufficiency(original: Reply, kept: Sequence[Reply], empty: Reply, mode: MetricMode) -> float | None:
    """Mean over k = 0..n of the drop when only the top-k tokens are kept (k = n: x itself, 0)."""
    original = _fix(original, mode)
    if original is None or original.failed:
        return None
    predicted = original.label
    p0 = _prob(original, mode, predicted)
    p_empty = 0.5 if mode.empty_assumed_half else _prob(empty, mode, predicted)
    probs = [p_empty] + [_prob(r, mode, predicted) for r in kept]
    if any(p is None for p in probs):
        return None
    diffs = [abs(p0 - p) if mode.sufficiency_absolute else p0 - p for p in probs]
    return sum(diffs) / (len(kept) + 2)


def eraser_bins(original: Reply, removed: Sequence[Reply], kept: Sequence[Reply], mode: MetricMode,
                bins: Sequence[float] = ERASER_BINS) -> tuple[float | None, float | None]:
    """(comprehensiveness, sufficiency) averaged over ERASER's bins of the top tokens.

    Bin b removes/keeps the top max(1, ceil(b * n)) tokens (DeYoung et al. 2020).
    """
    original = _fix(original, mode)
    if original is None or original.failed:
        return None, None
    n = len(removed)
    predicted = original.label
    p0 = _prob(original, mode, predicted)
    comp, suff = [], []
    for b in bins:
        k = min(n, max(1, math.ceil(b * n)))
        p_removed = _prob(removed[k - 1], mode, predicted)
        p_kept = p0 if k == n else _prob(kept[k - 1], mode, predicted)
        if p_removed is None or p_kept is None:
            return None, None
        comp.append(p0 - p_removed)
        suff.append(abs(p0 - p_kept) if mode.sufficiency_absolute else p0 - p_kept)
    return float(np.mean(comp)), float(np.mean(suff))


def decision_flip_mit(original: Reply, removed_first: Reply, mode: MetricMode) -> float | None:
    """1.0 if deleting the most important token flips the decision, else 0.0."""
    original, removed_first = _fix(original, mode), _fix(removed_first, mode)
    if original is None or removed_first is None or original.failed or removed_first.failed:
        return None
    if mode.df_mit_crossing:
        p0, p1 = original.p, removed_first.p
        return float((p1 > 0.5 and p0 <= 0.5) or (p1 <= 0.5 and p0 > 0.5))
    return float(removed_first.label != original.label)


def decision_flip_fraction(original: Reply, removed: Sequence[Reply], mode: MetricMode) -> float | None:
    """m / (n + 1) with m the first deletion count whose label differs from the original (n + 1 if never)."""
    original = _fix(original, mode)
    if original is None or original.failed:
        return None
    n = len(removed)
    for k, reply in enumerate(removed, 1):
        reply = _fix(reply, mode)
        if reply is None or reply.failed:
            return None
        if reply.label != original.label:
            return k / (n + 1)
    return 1.0


def deletion_rank_correlation(original: Reply, single: Sequence[Reply], values: Sequence[float | None],
                              mode: MetricMode, rng: np.random.Generator | None = None) -> tuple[float | None, float]:
    """(Spearman between each token's deletion effect and its attribution, share of tied deltas).

    compat: delta_i = c0 - c_{x without i} on raw confidences, both sides + U(-noise, noise).
    corrected: delta_i = P(predicted | x) - P(predicted | x without i), attribution toward the
    predicted class, no noise; average-rank ties; None when either side is constant.
    """
    original = _fix(original, mode)
    if original is None or original.failed or len(single) < 2:
        return None, 0.0
    predicted = original.label
    if mode.rankdel_raw_confidence:
        fixed = [_fix(r, mode) for r in single]
        if any(r is None or r.failed for r in fixed):
            return None, 0.0
        deltas = [original.confidence - r.confidence for r in fixed]
        attributions = [v if v is not None else 0.0 for v in values]
    else:
        p0 = _prob(original, mode, predicted)
        probs = [_prob(r, mode, predicted) for r in single]
        if any(p is None for p in probs):
            return None, 0.0
        sign = -1.0 if predicted == 0 else 1.0
        pairs = [(p0 - p, sign * v) for p, v in zip(probs, values, strict=True) if v is not None]
        deltas = [d for d, _ in pairs]
        attributions = [a for _, a in pairs]
    ties = 1.0 - len(set(np.round(deltas, 12))) / len(deltas) if deltas else 0.0
    if mode.noise:
        rng = rng or np.random.default_rng(0)
        deltas = list(np.array(deltas) + rng.uniform(-mode.noise, mode.noise, len(deltas)))
        attributions = list(np.array(attributions) + rng.uniform(-mode.noise, mode.noise, len(attributions)))
    if len(deltas) < 2 or np.ptp(deltas) == 0 or np.ptp(attributions) == 0:
        return None, ties
    return float(stats.spearmanr(deltas, attributions).statistic), ties
