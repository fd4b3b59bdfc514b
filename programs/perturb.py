"""The one perturbation function shared by explainers and metrics: delete or keep token positions.

Deletion joins the remaining whitespace tokens with single spaces (the study's convention for
occlusion and every metric), so "what the model sees" is always a plain shorter review.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def delete(tokens: Sequence[str], positions: Iterable[int]) -> str:
    """The review without the given positions (a repeated word is removed only where asked).

    >>> delete(["a", "b", "a"], [0])
    'b a'
    """
    drop = set(positions)
    return " ".join(t for i, t in enumerate(tokens) if i not in drop)


def keep(tokens: Sequence[str], positions: Iterable[int]) -> str:
    """Only the given positions, in the review's order.

    >>> keep(["a", "b", "c"], [2, 0])
    'a c'
    """
    return " ".join(tokens[i] for i in sorted(set(positions)))


def perturb(tokens: Sequence[str], operation: str, positions: Iterable[int]) -> str:
    if operation == "delete":
        return delete(tokens, positions)
    if operation == "keep":
        return keep(tokens, positions)
    raise ValueError(f"unknown perturbation {operation!r}; use delete or keep")
