"""Faithfulness and agreement for explanations: build the perturbed texts, ask the probe once for
all of them, hand the recorded replies to the pure metric functions, aggregate with CIs."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from metrics.agreement import AGREEMENT_METRICS, RANKING_ONLY, agreement
from metrics.faithfulness import (
    ERASER_BINS,
    Reply,
    comprehensiveness,
    decision_flip_fraction,
    decision_flip_mit,
    deletion_rank_correlation,
    eraser_bins,
    perturbation_plan,
    rank_positions,
    sufficiency,
)
from metrics.modes import MetricMode
from metrics.stats import mean_ci
from programs.perturb import delete, keep, perturb
from programs.types import Answer, Attribution

EXPLANATIONS = ("self", "topk", "occlusion", "lime")
FAITHFULNESS_METRICS = ("comprehensiveness", "sufficiency", "comprehensiveness_bins", "sufficiency_bins",
                        "df_mit", "df_frac", "rankdel")
Lookup = Callable[[Sequence[str]], Sequence[Answer | None]]


def values_and_ranking(attribution: Attribution | None, n: int) -> tuple[list[float | None], list[int] | None]:
    """An explanation as the metric functions take it: values per position (None = none given) and,
    for ranking-only explanations (top-k), the ranking."""
    if attribution is None:  # a failed answer: no explanation for this sentence
        return [None] * n, None
    return list(attribution.values), (list(attribution.ranking) if attribution.ranking is not None else None)


def to_reply(answer: Answer | None, p_source: str) -> Reply | None:
    """None = never recorded (replay miss); a failed answer = Reply with no label."""
    if answer is None:
        return None
    if not answer.ok:
        return Reply(None, None, None)
    return Reply(answer.label_int, answer.confidence, answer.p_positive.get(p_source))


def full_ranking(values: Sequence[float | None], ranking: Sequence[int] | None, n: int, predicted: int | None,
                 mode: MetricMode, rng: np.random.Generator) -> list[int]:
    """The ranking a metric consumes: a recorded one as given, else derived from values by the mode."""
    if ranking is not None and len(ranking) == n:
        return list(ranking)
    if ranking is not None:  # a top-k ranking padded with the other positions in random order (2024 code)
        rest = [i for i in range(n) if i not in set(ranking)]
        return list(ranking) + [int(i) for i in rng.permutation(rest)]
    return rank_positions(values, predicted=predicted, mode=mode, rng=rng)


def sentence_faithfulness(tokens: Sequence[str], values: Sequence[float | None], ranking: Sequence[int] | None,
                          original: Answer | None, lookup: Lookup, mode: MetricMode, *, p_source: str = "stated",
                          topk_single_step: bool = False, seed: int = 0,
                          bins_only: bool = False) -> dict[str, float | None]:
    """All faithfulness metrics of one explanation of one sentence (None = not computable).

    ``bins_only``: just the ERASER-bin comprehensiveness and sufficiency (about 10 probe texts per
    sentence instead of about 3n): the affordable objective inside an optimiser.
    """
    n = len(tokens)
    rng = np.random.default_rng(seed)
    base = to_reply(original, p_source)
    empty = {name: None for name in FAITHFULNESS_METRICS}
    if base is None or n == 0:
        return empty
    predicted = base.label if base.label is not None else 0
    if topk_single_step and ranking is not None:
        chosen = list(ranking)
        replies = [to_reply(a, p_source) for a in lookup([delete(tokens, chosen), keep(tokens, chosen)])]
        removed, kept = replies
        out = dict(empty)
        out["comprehensiveness"] = _single_step(base, removed, mode, predicted, "comp")
        out["sufficiency"] = _single_step(base, kept, mode, predicted, "suff")
        out["df_mit"] = decision_flip_mit(base, removed, mode)
        return out
    order = full_ranking(values, ranking, n, predicted, mode, rng)
    if bins_only:
        ks = sorted({min(n, max(1, math.ceil(b * n))) for b in ERASER_BINS})
        removed_texts = {k: delete(tokens, order[:k]) for k in ks}
        kept_texts = {k: keep(tokens, order[:k]) for k in ks if k < n}
        answers = dict(zip([*removed_texts.values(), *kept_texts.values()],
                           lookup([*removed_texts.values(), *kept_texts.values()])))
        removed = [to_reply(answers[removed_texts[k]], p_source) if k in removed_texts else None for k in range(1, n + 1)]
        kept = [to_reply(answers[kept_texts[k]], p_source) if k in kept_texts else None for k in range(1, n)]
        comp_bins, suff_bins = eraser_bins(base, removed, kept, mode)
        return {**empty, "comprehensiveness_bins": comp_bins, "sufficiency_bins": suff_bins}
    plan = perturbation_plan(n, order)
    texts = {key: [perturb(tokens, op, pos) for op, pos in items] for key, items in plan.items()}
    everything = texts["removed"] + texts["kept"] + texts["single"] + [""]
    answers = dict(zip(everything, lookup(everything)))
    replies = {key: [to_reply(answers[t], p_source) for t in items] for key, items in texts.items()}
    empty_reply = to_reply(answers[""], p_source)
    removed, kept, single = replies["removed"], replies["kept"], replies["single"]
    ordered_values = values if any(v is not None for v in values) else _rank_values(order, n)
    comp_bins, suff_bins = eraser_bins(base, removed, kept, mode)
    rankdel, ties = deletion_rank_correlation(base, single, ordered_values, mode, rng)
    return {
        "comprehensiveness": comprehensiveness(base, removed, mode),
        "sufficiency": sufficiency(base, kept, empty_reply, mode),
        "comprehensiveness_bins": comp_bins,
        "sufficiency_bins": suff_bins,
        "df_mit": decision_flip_mit(base, removed[0], mode),
        "df_frac": decision_flip_fraction(base, removed, mode),
        "rankdel": rankdel,
        "rankdel_tied_share": ties,
    }


def _single_step(base: Reply, other: Reply | None, mode: MetricMode, predicted: int, kind: str) -> float | None:
    """The paper-era top-k protocol: one deletion (comp) or one kept set (suff) of all k words."""
    if other is None or other.failed or base.failed:
        return None
    def q(r: Reply) -> float:
        return (1 - r.p if predicted == 0 else r.p) if mode.class_aware else r.p
    diff = q(base) - q(other)
    return abs(diff) if kind == "suff" and mode.sufficiency_absolute else diff


def _rank_values(order: Sequence[int], n: int) -> list[float]:
    """Values implied by a ranking alone (first = highest), for rank-based correlation."""
    values = [0.0] * n
    for r, i in enumerate(order):
        values[i] = float(n - r)
    return values


def aggregate(rows: Sequence[dict[str, float | None]], metrics: Sequence[str], *, seed: int = 0) -> dict[str, Any]:
    """Means with 95 % bootstrap CIs over sentences; excluded sentences are counted per metric."""
    out: dict[str, Any] = {}
    for metric in metrics:
        out.update(mean_ci([row.get(metric) for row in rows], seed=seed).as_dict(metric))
    return out


def agreement_table(order: str, explanations: dict[str, list], originals: Sequence, tokens: Sequence,
                     mode: MetricMode, seed: int) -> dict[str, dict[str, Any]]:
    kinds = [k for k in (*EXPLANATIONS, "random") if k in explanations]
    table: dict[str, dict[str, Any]] = {}
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            rows = []
            for s, (t, original) in enumerate(zip(tokens, originals)):
                predicted = original.label_int if original is not None and original.ok else None
                rank_a, values_a = _ranked(explanations[a][s], predicted, mode)
                rank_b, values_b = _ranked(explanations[b][s], predicted, mode)
                rows.append(agreement(rank_a, rank_b, values_a, values_b, n=len(t)))
            metrics = RANKING_ONLY if "topk" in (a, b) else AGREEMENT_METRICS
            table[f"{order} {a}~{b}"] = aggregate(rows, metrics, seed=seed)
    return table


def _ranked(explanation: tuple, predicted: int | None, mode: MetricMode) -> tuple[list[int], list | None]:
    values, ranking = explanation
    if ranking is not None:
        return list(ranking), values
    return rank_positions(values, predicted=predicted, mode=mode), values
