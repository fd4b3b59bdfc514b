"""Faithfulness and agreement for explanations: build the perturbed texts, ask the probe once for
all of them, hand the recorded replies to the pure metric functions, aggregate with CIs."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np
from scipy.stats import spearmanr

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
from metrics.modes import MetricMode, metric_mode
from metrics.stats import mean_ci
from programs.explainers import explainer
from programs.explainers.occlusion import Occlusion
from programs.perturb import delete, keep, perturb
from programs.probe import Probe, ProgramProbe
from programs.probe_cache import ProbeCache
from programs.self_explain import SentimentProgram
from programs.types import Answer, Attribution, Example

EXPLANATIONS = ("self", "topk", "occlusion", "lime")
FAITHFULNESS_METRICS = ("comprehensiveness", "sufficiency", "comprehensiveness_bins", "sufficiency_bins",
                        "df_mit", "df_frac", "rankdel")
FAITHFULNESS_LOGGED = ("comprehensiveness_bins", "sufficiency_bins", "comprehensiveness", "df_mit", "rankdel")
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


def explanation_row(tokens: Sequence[str], values: Sequence[float | None], ranking: Sequence[int] | None,
                    original: Answer | None, lookup: Lookup, mode: MetricMode, *, p_source: str = "stated",
                    seed: int = 0, bins_only: bool = False) -> dict[str, float | None]:
    """Faithfulness of one explanation, comparable across granularities.

    A top-k explanation is measured like a full one, its ranking padded with the other positions in
    random order (as the study's 2024 code pads it), and also by the paper's single step (all k words
    at once) as ``comprehensiveness_topk`` / ``sufficiency_topk``.
    """
    row = sentence_faithfulness(tokens, values, ranking, original, lookup, mode, p_source=p_source, seed=seed,
                                bins_only=bins_only)
    if ranking is not None:
        single = sentence_faithfulness(tokens, values, ranking, original, lookup, mode, p_source=p_source,
                                       topk_single_step=True, seed=seed)
        row.update({"comprehensiveness_topk": single["comprehensiveness"],
                    "sufficiency_topk": single["sufficiency"]})
    return row


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


def explanation_quality(examples: Sequence[Example], attributions: Sequence[Attribution | None],
                        occlusion_probe: Probe | None) -> dict[str, Any]:
    """For full explanations: non-degenerate share (>= 3 distinct values), range violations and the
    Spearman correlation with the model's own occlusion (mean over examples, bootstrap CI)."""
    full = [(e, a) for e, a in zip(examples, attributions) if a is not None and a.ranking is None]
    if not full:
        return {}
    out: dict[str, Any] = {
        "explanation_nondegenerate_rate": sum(len({v for v in a.values if v is not None}) >= 3 for _, a in full)
        / len(full),
        "explanation_range_violations": sum(a.info.get("range_violations", 0) for _, a in full),
    }
    if occlusion_probe is not None:
        occlusion = Occlusion(p_source="logprob" if getattr(occlusion_probe, "mode", "") == "logprob" else "stated")
        rhos: list[float | None] = []
        for example, attribution in full:
            reference = occlusion.explain(list(example.tokens), occlusion_probe).values
            pairs = [(x, y) for x, y in zip(attribution.values, reference) if x is not None and y is not None]
            xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
            constant = len(pairs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2
            rhos.append(None if constant else float(spearmanr(xs, ys).statistic))
        out.update(mean_ci(rhos).as_dict("spearman_vs_occlusion"))
    return out


def explanation_faithfulness(examples: Sequence[Example], attributions: Sequence[Attribution | None], lm: Any, *,
                             mode_name: str = "corrected", probe_mode: str = "logprob",
                             explainers: Sequence[str] = ("occlusion", "random"), seed: int = 0,
                             cache: ProbeCache | None = None
                             ) -> tuple[dict[str, float | None], list[dict[str, float | None]]]:
    """How faithful a program's explanations are, with baselines beside them.

    ERASER-bin comprehensiveness/sufficiency and friends through the probe (the prediction-only
    program on the same LM), the same for each of ``explainers`` (``random_...``, ``occlusion_...``),
    agreement with occlusion, and the explanations' quality (non-degenerate share, range
    violations, Spearman with occlusion). The probe is cached, so repeated programs are cheap.
    Returns the aggregates and the self-explanation's per-sentence metrics (example order)."""
    mode = metric_mode(mode_name)
    probe = ProgramProbe(SentimentProgram("P"), lm, mode=probe_mode, cache=cache)
    source = "logprob" if probe_mode == "logprob" else "stated"
    sample = list(zip(examples, attributions))
    calls_before = probe.stats.model_calls
    started = time.perf_counter()
    originals = probe.answers([e.text for e, _ in sample])
    out: dict[str, float | None] = {}
    per_sentence: list[dict[str, float | None]] = []
    kinds = {"self": [a for _, a in sample]}
    for name in explainers:
        made = explainer(name, **({"p_source": source} if name in ("occlusion", "lime") else {}))
        kinds[name] = [made.explain(list(e.tokens), probe) for e, _ in sample]
    for kind, items in kinds.items():
        rows = []
        for i, ((example, _), attribution, original) in enumerate(zip(sample, items, originals)):
            if attribution is None:
                rows.append({})
                continue
            values, ranking = values_and_ranking(attribution, len(example.tokens))
            rows.append(explanation_row(list(example.tokens), values, ranking, original, probe.answers, mode,
                                        p_source=source, seed=seed + i))
        summary = aggregate(rows, FAITHFULNESS_LOGGED + (("comprehensiveness_topk", "sufficiency_topk")
                                                         if any("comprehensiveness_topk" in r for r in rows) else ()),
                            seed=seed)
        if kind == "self":
            per_sentence = rows
        prefix = "" if kind == "self" else f"{kind}_"
        out.update({f"{prefix}{k}": v for k, v in summary.items()})
    if "occlusion" in kinds:
        agree = []
        for (example, self_att), occ, original in zip(sample, kinds["occlusion"], originals):
            if self_att is None or self_att.ranking is not None:
                continue
            predicted = original.label_int if original.ok else None
            n = len(example.tokens)
            agree.append(agreement(rank_positions(self_att.values, predicted=predicted, mode=mode),
                                   rank_positions(occ.values, predicted=predicted, mode=mode),
                                   self_att.values, occ.values, n=n))
        for metric in ("rank_correlation", "feature_agreement"):
            out.update(mean_ci([a[metric] for a in agree], seed=seed).as_dict(f"agreement_occlusion_{metric}"))
    out.update(explanation_quality([e for e, _ in sample], [a for _, a in sample],
                                   probe if "occlusion" in kinds else None))
    out["faithfulness_probe_calls"] = probe.stats.model_calls - calls_before
    out["faithfulness_cache_hits"] = probe.stats.cache_hits
    out["faithfulness_seconds"] = time.perf_counter() - started
    return out, per_sentence
