"""What explainers share: turning an answer into P(positive) by a named source."""

from __future__ import annotations

from programs.types import Answer

P_SOURCES = ("stated", "logprob")


def p_positive(answer: Answer, source: str, *, failure_as_default: bool) -> float | None:
    """P(positive) of an answer by ``source``; a failure is None, or the study's 0.5 in compat mode."""
    if source not in P_SOURCES:
        raise ValueError(f"unknown probability source {source!r}; choose one of {list(P_SOURCES)}")
    if answer.ok and source in answer.p_positive:
        return answer.p_positive[source]
    if answer.ok:
        raise ValueError(f"the backend gave no {source!r} probability; use --p-source "
                         f"{'/'.join(answer.p_positive) or 'stated'}")
    return 0.5 if failure_as_default else None
