"""The one measurement pipeline: explanations -> probe answers -> per-sentence metrics -> aggregates with CIs
and the random baseline -> agreement.

:func:`measure` is *the* way an explanation becomes a faithfulness number, for every command (replay and
its switch ablation, study, evaluate, run, optimize). It asks the probe once per round for the texts of
every sentence and explanation together (originals; then every metric's perturbations), so the probe can
deduplicate, consult its cache once and schedule the rest; all arithmetic is in ``metrics/``.
:func:`explain` computes the reference explainers (occlusion, LIME; the lexicon and random, which ask no model)
through the same probe, with their texts asked in one round as well.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metrics.agreement import AGREEMENT_METRICS, RANKING_ONLY, agreement
from metrics.faithfulness import (
    FAITHFULNESS_METRICS,
    Reply,
    complete_ranking,
    plan,
    rank_positions,
    score,
)
from metrics.modes import MetricMode
from metrics.quality import nondegenerate
from metrics.stats import mean_ci, paired_difference, paired_ratio
from programs.explainers import explainer
from programs.perturb import perturb
from programs.probe import Probe
from programs.types import Answer, Attribution, Example

# The order explanation kinds appear in tables and agreement pairs.
KINDS = ("self", "topk", "occlusion", "lime", "lexicon", "random")
# The baselines self is paired against, and the kinds reported as a share of occlusion (paired_against_baselines)
PAIRED_BASELINES = ("random", "occlusion", "lexicon")
SHARES_OF_OCCLUSION = ("self", "lexicon")
TOPK_PROTOCOLS = ("single-step", "padded")


@dataclass(frozen=True)
class Explanation:
    """An explanation as the metrics consume it: one value per position (None = none given) and, for
    explanations that give an order rather than values, a ranking. ``topk``: the ranking names only the k
    words a top-k explanation chose (the rest of the order is unknown)."""

    values: tuple[float | None, ...]
    ranking: tuple[int, ...] | None = None
    topk: bool = False

    @classmethod
    def of(cls, attribution: Attribution | None) -> Explanation | None:
        """An attribution as an explanation; None stays None (a failed answer has no explanation)."""
        if attribution is None:
            return None
        ranking = tuple(attribution.ranking) if attribution.ranking is not None else None
        return cls(tuple(attribution.values), ranking, topk=ranking is not None)

    def as_record(self) -> dict[str, Any]:
        """The explanation as a report's JSON keeps it: its values, rounded to 6 decimals to keep a report small
        (words closer than that read as tied), and its ranking when it gives one.

        >>> Explanation((0.1234567, None), (1, 0), topk=True).as_record()
        {'values': [0.123457, None], 'ranking': [1, 0]}
        """
        record: dict[str, Any] = {"values": [None if v is None else round(v, 6) for v in self.values]}
        if self.ranking is not None:
            record["ranking"] = list(self.ranking)
        return record


@dataclass
class Measurement:
    """What :func:`measure` found. ``rows[kind][i]``: sentence i's metrics ({} when it had no explanation);
    ``summary[kind]``: means with 95 % bootstrap CIs; ``agreement["a~b"]``: agreement aggregates."""

    rows: dict[str, list[dict[str, float | None]]]
    summary: dict[str, dict[str, Any]]
    agreement: dict[str, dict[str, Any]] = field(default_factory=dict)
    originals: list[Answer | None] = field(default_factory=list)


def to_reply(answer: Answer | None, p_source: str) -> Reply | None:
    """An answer as metric input. None = never recorded (a replay miss); a failed answer = a Reply with no label."""
    if answer is None:
        return None
    if not answer.ok:
        return Reply(None, None, None)
    return Reply(answer.label_int, answer.confidence, answer.p_positive.get(p_source))


def aggregate(rows: Sequence[Mapping[str, float | None]], metrics: Sequence[str], *, seed: int = 0) -> dict[str, Any]:
    """Means with 95 % bootstrap CIs over sentences; excluded sentences are counted per metric."""
    out: dict[str, Any] = {}
    for metric in metrics:
        out.update(mean_ci([row.get(metric) for row in rows], seed=seed).as_dict(metric))
    return out


def explain(names: Sequence[str], tokens: Sequence[Sequence[str]], probe: Probe, *, mode: MetricMode, seed: int = 0,
            lime_samples_per_token: int = 10) -> dict[str, list[Explanation]]:
    """Reference explanations (occlusion, LIME, lexicon, random) of every sentence through ``probe``.

    Every explainer's perturbed texts of every sentence are asked in one round first (the probe
    schedules and caches them); the explainers then find each answer already there.
    """
    made = {}
    for name in names:
        options: dict[str, Any] = {"seed": seed} if name in ("random", "lime") else {}
        if name in ("occlusion", "lime"):
            options.update(p_source=probe.p_source, failure_as_default=mode.failure_as_default)
        if name == "lime":
            options.update(compat=mode.name == "compat", samples_per_token=lime_samples_per_token)
        made[name] = explainer(name, **options)
    probe.answers([text for e in made.values() for t in tokens for text in e.texts(list(t))])
    return {name: [Explanation.of(e.explain(list(t), probe)) for t in tokens] for name, e in made.items()}


def measure(tokens: Sequence[Sequence[str]], explanations: Mapping[str, Sequence[Explanation | None]],
            probe: Probe, *, mode: MetricMode, protocol: str = "all", topk: str = "padded",
            metrics: Sequence[str] = FAITHFULNESS_METRICS, agreement: str | Sequence[tuple[str, str]] = (),
            originals: Sequence[Answer | None] | None = None, seed: int = 0, first: int = 0) -> Measurement:
    """Faithfulness (and agreement) of each kind of explanation of each sentence.

    ``protocol``: which metrics (``all``, ``bins`` or ``single-step``; see :func:`metrics.faithfulness.plan`).
    ``topk``: how a top-k explanation is measured: ``single-step`` (the paper's protocol: its k words at
    once, under the main metric names) or ``padded`` (its ranking padded at random, as the study's 2024
    code does, so it shares one axis with full explanations; the single step is added as
    ``comprehensiveness_topk`` / ``sufficiency_topk``). ``agreement``: ``"all"`` pairs of kinds, or the
    pairs given (see :func:`agree`). Sentence i draws its random stream from ``seed + first + i``: ``first`` is
    the index of ``tokens[0]`` in the whole run, so a shard of it draws what the whole run would. ``originals``:
    the probe's answers on the unperturbed sentences, if already asked.
    """
    if topk not in TOPK_PROTOCOLS:
        raise ValueError(f"unknown top-k protocol {topk!r}; choose one of {list(TOPK_PROTOCOLS)}")
    originals = list(originals) if originals is not None else probe.answers([" ".join(t) for t in tokens])
    base = [to_reply(a, probe.p_source) for a in originals]
    jobs = []  # (kind, sentence, key, protocol, order, explanation, rng)
    for kind, items in explanations.items():
        for i, (sentence, explanation, reply) in enumerate(zip(tokens, items, base, strict=True)):
            if explanation is None or reply is None or not sentence:
                continue
            n, rng = len(sentence), np.random.default_rng(seed + first + i)
            predicted = reply.label if reply.label is not None else 0
            if explanation.topk and topk == "single-step":
                jobs.append((kind, i, "", "single-step", list(explanation.ranking), explanation, rng))
                continue
            order = complete_ranking(explanation.values, explanation.ranking, n, predicted, mode, rng)
            jobs.append((kind, i, "", protocol, order, explanation, rng))
            if explanation.topk:
                jobs.append((kind, i, "_topk", "single-step", list(explanation.ranking), explanation, rng))
    texts = {(i, p): perturb(tokens[i], *p) for _, i, _, proto, order, _, _ in jobs
             for p in plan(len(tokens[i]), order, proto)}
    unique = list(dict.fromkeys(texts.values()))  # each text asked once, in first-needed order
    answers = dict(zip(unique, probe.answers(unique), strict=True))
    rows: dict[str, list[dict[str, float | None]]] = {kind: [{} for _ in tokens] for kind in explanations}
    for kind, i, suffix, proto, order, explanation, rng in jobs:
        n = len(tokens[i])
        replies = {p: to_reply(answers[texts[(i, p)]], probe.p_source) for p in plan(n, order, proto)}
        scored = score(base[i], replies, n, order, explanation.values, mode, proto, rng)
        if suffix:
            rows[kind][i].update({"comprehensiveness_topk": scored["comprehensiveness"],
                                  "sufficiency_topk": scored["sufficiency"]})
        else:
            rows[kind][i].update(scored)
    summary = {}
    for kind, kind_rows in rows.items():
        extra = ("comprehensiveness_topk", "sufficiency_topk") if any("comprehensiveness_topk" in r
                                                                      for r in kind_rows) else ()
        summary[kind] = aggregate(kind_rows, (*metrics, *extra), seed=seed)
    measured = Measurement(rows, summary, originals=originals)
    if agreement:
        measured.agreement = agree(tokens, explanations, originals, mode=mode, pairs=agreement, seed=seed)
    return measured


def agree(tokens: Sequence[Sequence[str]], explanations: Mapping[str, Sequence[Explanation | None]],
          originals: Sequence[Answer | None], *, mode: MetricMode, pairs: str | Sequence[tuple[str, str]] = "all",
          seed: int = 0) -> dict[str, dict[str, Any]]:
    """Agreement between kinds of explanation (``"all"`` pairs, or the pairs given), keyed ``"a~b"``: the
    aggregates of :func:`agreement_rows`."""
    rows = agreement_rows(tokens, explanations, originals, mode=mode, pairs=pairs)
    return {pair: aggregate_agreement(pair, pair_rows, seed=seed) for pair, pair_rows in rows.items()}


def agreement_rows(tokens: Sequence[Sequence[str]], explanations: Mapping[str, Sequence[Explanation | None]],
                   originals: Sequence[Answer | None], *, mode: MetricMode,
                   pairs: str | Sequence[tuple[str, str]] = "all") -> dict[str, list[dict[str, float | None]]]:
    """Each sentence's agreement between kinds of explanation, keyed ``"a~b"``. Rankings follow the mode
    (toward the predicted class in corrected mode); a sentence where either side has no explanation gets {}."""
    if pairs == "all":
        kinds = [k for k in KINDS if k in explanations]
        pairs = [(a, b) for i, a in enumerate(kinds) for b in kinds[i + 1:]]
    table: dict[str, list[dict[str, float | None]]] = {}
    for a, b in pairs:
        rows: list[dict[str, float | None]] = []
        for s, (sentence, original) in enumerate(zip(tokens, originals, strict=True)):
            first, second = explanations[a][s], explanations[b][s]
            if first is None or second is None:
                rows.append({})
                continue
            predicted = original.label_int if original is not None and original.ok else None
            rank_a, values_a = _ranked(first, predicted, mode)
            rank_b, values_b = _ranked(second, predicted, mode)
            rows.append(agreement(rank_a, rank_b, values_a, values_b, n=len(sentence)))
        table[f"{a}~{b}"] = rows
    return table


def aggregate_agreement(pair: str, rows: Sequence[Mapping[str, float | None]], *, seed: int = 0) -> dict[str, Any]:
    """Agreement aggregates of one pair ``"a~b"``; a top-k explanation orders only its k words: set-based only."""
    return aggregate(rows, RANKING_ONLY if "topk" in pair.split("~") else AGREEMENT_METRICS, seed=seed)


def _ranked(explanation: Explanation, predicted: int | None, mode: MetricMode) -> tuple[list[int], list]:
    if explanation.ranking is not None:
        return list(explanation.ranking), list(explanation.values)
    return rank_positions(explanation.values, predicted=predicted, mode=mode), list(explanation.values)


# What a program variant logs beside its accuracy (run, evaluate --faithfulness, optimize's held-out slice).
PROGRAM_METRICS = ("comprehensiveness_bins", "sufficiency_bins", "comprehensiveness", "df_mit", "rankdel")
OCCLUSION_PAIR = "self~occlusion"


def program_faithfulness(examples: Sequence[Example], attributions: Sequence[Attribution | None], probe: Probe, *,
                         mode: MetricMode, explainers: Sequence[str] = ("occlusion", "random"), seed: int = 0,
                         lime_samples_per_token: int = 10, protocol: str = "all", first: int = 0
                         ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[Explanation | None]]]:
    """How faithful a program's explanations are, with baselines beside them, as flat metric keys.

    Self-explanations (``comprehensiveness_bins`` ...) and each explainer (``occlusion_...``, ``random_...``)
    through ``probe``; Spearman with the model's own occlusion and top-k feature agreement with it;
    the explanations' non-degenerate share and range violations; probe cost. Returns the aggregates
    (:func:`faithfulness_summary` of the records), each sentence's record (example order: every kind's metrics
    under its name, its agreement with occlusion under ``self~occlusion``, its explanation's quality) and every
    kind's explanations. ``first``: the index of ``examples[0]`` in the whole run (see :func:`measure`).
    """
    started = time.perf_counter()
    calls, hits = probe.stats.model_calls, probe.stats.cache_hits
    tokens = [list(e.tokens) for e in examples]
    originals = probe.answers([e.text for e in examples])
    kinds = {"self": [Explanation.of(a) for a in attributions],
             **explain(explainers, tokens, probe, mode=mode, seed=seed, lime_samples_per_token=lime_samples_per_token)}
    measured = measure(tokens, kinds, probe, mode=mode, protocol=protocol, metrics=PROGRAM_METRICS,
                       originals=originals, seed=seed, first=first)
    pairs = agreement_rows(tokens, kinds, originals, mode=mode, pairs=[("self", "occlusion")]) \
        if "occlusion" in kinds else {}
    records = [{**{kind: rows[i] for kind, rows in measured.rows.items()},
                **{pair: rows[i] for pair, rows in pairs.items()}, **explanation_record(attribution)}
               for i, attribution in enumerate(attributions)]
    out = faithfulness_summary(records, seed=seed)
    out["faithfulness_probe_calls"] = probe.stats.model_calls - calls
    out["faithfulness_cache_hits"] = probe.stats.cache_hits - hits
    out["faithfulness_seconds"] = time.perf_counter() - started
    return out, records, kinds


def explanation_record(attribution: Attribution | None) -> dict[str, Any]:
    """What the explanation-quality figures need of one sentence's explanation: whether it is a full one (a value
    per word), whether those values are non-degenerate, and its range violations."""
    full = attribution is not None and attribution.ranking is None
    return {"full_explanation": full,
            "nondegenerate": nondegenerate(attribution.values) if full else None,
            "explanation_range_violations": attribution.info.get("range_violations", 0) if full else 0}


def explanation_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The full explanations' non-degenerate share (at least 3 distinct values) and range violations, from
    :func:`explanation_record` records; nothing when there is no full explanation."""
    full = [r for r in records if r["full_explanation"]]
    if not full:
        return {}
    return {"explanation_nondegenerate_rate": sum(bool(r["nondegenerate"]) for r in full) / len(full),
            "explanation_range_violations": sum(r["explanation_range_violations"] for r in full)}


def faithfulness_summary(records: Sequence[Mapping[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """The flat faithfulness keys from per-sentence records (:func:`program_faithfulness`): each kind's means with
    bootstrap CIs, self paired against random and occlusion, explanation quality, agreement with occlusion.
    Records of consecutive shards of a run, concatenated, give the whole run's figures."""
    kinds = [k for k in KINDS if records and k in records[0]]
    rows = {kind: [r[kind] for r in records] for kind in kinds}
    out: dict[str, Any] = {}
    for kind, kind_rows in rows.items():
        extra = ("comprehensiveness_topk", "sufficiency_topk") if any("comprehensiveness_topk" in r
                                                                      for r in kind_rows) else ()
        summary = aggregate(kind_rows, (*PROGRAM_METRICS, *extra), seed=seed)
        out.update({kind_key(kind, k): v for k, v in summary.items()})
    out.update(paired_against_baselines(rows, seed=seed))
    out.update(explanation_summary(records))
    if records and OCCLUSION_PAIR in records[0]:
        out.update(occlusion_agreement([r[OCCLUSION_PAIR] for r in records], seed=seed))
    return out


def kind_key(kind: str, key: str) -> str:
    """A kind's flat metric key: self's figures keep their names, every other kind's are prefixed with it
    (``comprehensiveness_bins``, ``occlusion_comprehensiveness_bins``)."""
    return key if kind == "self" else f"{kind}_{key}"


def paired_against_baselines(rows: Mapping[str, Sequence[Mapping[str, float | None]]], *, seed: int = 0,
                             metric: str = "comprehensiveness_bins") -> dict[str, Any]:
    """Self minus each baseline (random, occlusion, lexicon) on the same sentences: the paired mean difference of
    ``metric`` with its bootstrap CI and permutation p-value, as ``<metric>_vs_<baseline>`` keys; and self and the
    lexicon as shares of occlusion (the ratio of their means, paired CI), as ``<metric>_share_of_occlusion`` and
    ``lexicon_<metric>_share_of_occlusion``."""
    values = {kind: [r.get(metric) for r in kind_rows] for kind, kind_rows in rows.items()}
    out: dict[str, Any] = {}
    for baseline in PAIRED_BASELINES:
        if baseline not in values:
            continue
        diff = paired_difference(values["self"], values[baseline], seed=seed)
        key = f"{metric}_vs_{baseline}"
        out.update({key: diff["difference"], f"{key}_ci_low": diff["ci_low"], f"{key}_ci_high": diff["ci_high"],
                    f"{key}_p_value": diff["p_value"], f"{key}_n": diff["n"]})
    for kind in SHARES_OF_OCCLUSION:
        if "occlusion" not in values or kind not in values:
            continue
        share = paired_ratio(values[kind], values["occlusion"], seed=seed)
        key = kind_key(kind, f"{metric}_share_of_occlusion")
        out.update({key: share["ratio"], f"{key}_ci_low": share["ci_low"], f"{key}_ci_high": share["ci_high"],
                    f"{key}_n": share["n"]})
    return out


def occlusion_agreement(rows: Sequence[Mapping[str, float | None]], *, seed: int = 0) -> dict[str, Any]:
    """How well self-explanations agree with the model's own occlusion, from each sentence's ``self~occlusion``
    agreement row: Spearman over positions (full explanations) as ``spearman_vs_occlusion`` and top-k feature
    agreement, with CIs."""
    table = aggregate_agreement(OCCLUSION_PAIR, rows, seed=seed)
    out = {f"agreement_occlusion_{k}": v for k, v in table.items() if k.startswith("feature_agreement")}
    out.update({k.replace("rank_correlation", "spearman_vs_occlusion"): v for k, v in table.items()
                if k.startswith("rank_correlation")})
    return out
