"""Properties of an explanation itself, before any model is asked about it."""

from __future__ import annotations

from collections.abc import Sequence

MIN_DISTINCT = 3


def nondegenerate(values: Sequence[float | None], *, min_distinct: int = MIN_DISTINCT) -> bool:
    """Whether an explanation distinguishes words at all: at least ``min_distinct`` distinct values.

    >>> nondegenerate([0.1, 0.1, 0.5]), nondegenerate([0.1, -0.2, 0.5, None])
    (False, True)
    """
    return len({v for v in values if v is not None}) >= min_distinct
