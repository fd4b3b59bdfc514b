"""Agreement between two explanations of one sentence (Krishna et al. 2022; digest section 2.2).

Inputs are rankings (positions, most important first) and, for value-based metrics, the values.
k = max(1, floor(0.2 n)). In corrected mode zero values have no sign (they never agree in sign)
and rank correlation is tie-aware (average ranks; None when either side is constant).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

AGREEMENT_METRICS = ("feature_agreement", "rank_agreement", "sign_agreement", "signed_rank_agreement",
                     "rank_correlation", "pairwise_rank_agreement", "iou")
RANKING_ONLY = ("feature_agreement", "iou")


def agreement_k(n: int) -> int:
    """The study's k for agreement metrics.

    >>> agreement_k(4), agreement_k(18)
    (1, 3)
    """
    return max(1, math.floor(0.2 * n))


def agreement(rank_a: Sequence[int], rank_b: Sequence[int], values_a: Sequence[float | None] | None = None,
              values_b: Sequence[float | None] | None = None, *, n: int,
              zero_has_sign: bool = False) -> dict[str, float | None]:
    """All agreement metrics; value-based ones are None when either explanation has no values.

    A missing value (None) has no sign, and rank correlation uses the positions both cover.

    ``zero_has_sign`` (compat): the study's values carry noise, so a zero never stays exactly 0;
    pass noised values and leave it False to let ``a * b > 0`` decide as the study did.

    >>> agreement([0, 1, 2, 3, 4], [0, 2, 1, 3, 4], [.5, .4, .3, .2, .1], [.5, .3, .4, .2, .1], n=5)["rank_agreement"]
    1.0
    """
    k = agreement_k(n)
    top_a, top_b = list(rank_a[:k]), list(rank_b[:k])
    set_a, set_b = set(top_a), set(top_b)
    out: dict[str, float | None] = {
        "feature_agreement": len(set_a & set_b) / k,
        "iou": len(set_a & set_b) / len(set_a | set_b) if set_a | set_b else None,
    }
    if values_a is None or values_b is None or len(rank_a) != n or len(rank_b) != n:
        # a top-k explanation orders only k positions: set metrics only
        return {**{m: None for m in AGREEMENT_METRICS}, **out}
    pos_b = {p: i for i, p in enumerate(top_b)}

    def same_sign(i: int) -> bool:
        if values_a[i] is None or values_b[i] is None:
            return False
        product = values_a[i] * values_b[i]
        return product > 0 or (zero_has_sign and product == 0)

    out["rank_agreement"] = sum(1 for r, i in enumerate(top_a) if pos_b.get(i) == r) / k
    out["sign_agreement"] = sum(1 for i in top_a if i in set_b and same_sign(i)) / k
    out["signed_rank_agreement"] = sum(1 for r, i in enumerate(top_a) if pos_b.get(i) == r and same_sign(i)) / k
    both = [(x, y) for x, y in zip(values_a, values_b, strict=True) if x is not None and y is not None]
    a, b = np.asarray([x for x, _ in both], float), np.asarray([y for _, y in both], float)
    constant = len(both) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0
    out["rank_correlation"] = None if constant else float(stats.spearmanr(a, b).statistic)
    out["pairwise_rank_agreement"] = pairwise_rank_agreement(rank_a, rank_b)
    return out


def pairwise_rank_agreement(rank_a: Sequence[int], rank_b: Sequence[int]) -> float | None:
    """Share of position pairs ordered the same way by both rankings.

    >>> pairwise_rank_agreement([0, 1, 2], [0, 1, 2]), pairwise_rank_agreement([0, 1, 2], [2, 1, 0])
    (1.0, 0.0)
    """
    n = len(rank_a)
    if n < 2:
        return None
    where_a, where_b = np.empty(n, int), np.empty(n, int)
    where_a[list(rank_a)] = np.arange(n)
    where_b[list(rank_b)] = np.arange(n)
    # rankings are permutations (no ties), so the concordant share is (1 + Kendall's tau) / 2: O(n log n)
    return float((1 + stats.kendalltau(where_a, where_b).statistic) / 2)
