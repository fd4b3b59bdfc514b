"""``selfx study``: the study's faithfulness and agreement tables computed end to end on a live model.

Self-explanations (P-E, E-P, full and top-k) come from the programs; occlusion, LIME and the
random baseline from the explainers; every perturbed text goes through one cached probe, so a
re-run answers from the cache (and the programs' own answers from DSPy's response cache).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import dspy

from experiments.faithfulness_run import (
    FAITHFULNESS_METRICS,
    aggregate,
    agreement_table,
    sentence_faithfulness,
    values_and_ranking,
)
from metrics.modes import MetricMode, metric_mode
from programs.data import load_examples
from programs.explainers import explainer
from programs.lean_adapter import default_adapter
from programs.lm import check_value_mode, describe_lm, make_lm
from programs.probe import ProgramProbe
from programs.probe_cache import DEFAULT_CACHE, ProbeCache
from programs.readout import to_attribution
from programs.self_explain import SentimentProgram
from programs.types import Attribution, Example


def _self_explanations(program: SentimentProgram, examples: Sequence[Example], lm: Any) -> list[Attribution | None]:
    with dspy.context(lm=lm, adapter=default_adapter(lm)):
        return [to_attribution(program(review=e.text), e.text) for e in examples]


def live_study(*, lm_spec: str = "local", api_base: str | None = None, data: str = "huang2023", n: int = 100,
               mode_name: str = "corrected", probe_mode: str = "logprob", value_mode: str = "expected",
               lime_samples_per_token: int = 10, cache_path: str = str(DEFAULT_CACHE), seed: int = 0,
               p_source: str | None = None) -> dict[str, Any]:
    check_value_mode(lm_spec, api_base, value_mode)
    mode: MetricMode = metric_mode(mode_name)
    examples = load_examples(data, split="validation", n=n)
    tokens = [e.text.split() for e in examples]
    lm = make_lm(lm_spec, api_base=api_base, cache=True)
    cache = ProbeCache(cache_path)
    source = p_source or ("logprob" if probe_mode == "logprob" else "stated")
    start = time.perf_counter()
    faithfulness: dict[str, dict[str, Any]] = {}
    agreements: dict[str, dict[str, Any]] = {}
    probes: dict[str, dict[str, int]] = {}
    for order, full, topk in (("P-E", "PE", "PE-topk"), ("E-P", "EP", "EP-topk")):
        program = SentimentProgram(full, value_mode=value_mode)
        probe = ProgramProbe(program, lm, mode=probe_mode, cache=cache)
        originals = probe.answers([e.text for e in examples])
        explanations = {
            "self": [values_and_ranking(a, len(t)) for a, t in
                     zip(_self_explanations(program, examples, lm), tokens)],
            "topk": [values_and_ranking(a, len(t)) for a, t in
                     zip(_self_explanations(SentimentProgram(topk), examples, lm), tokens)],
        }
        for kind, options in (("occlusion", {"p_source": source, "failure_as_default": mode.failure_as_default}),
                              ("lime", {"compat": mode.name == "compat", "seed": seed, "p_source": source,
                                        "samples_per_token": lime_samples_per_token}),
                              ("random", {"seed": seed})):
            made = explainer(kind, **options)
            explanations[kind] = [values_and_ranking(made.explain(t, probe), len(t)) for t in tokens]
        for kind, items in explanations.items():
            rows = [sentence_faithfulness(t, values, ranking, original, probe.answers, mode, p_source=source,
                                          topk_single_step=(kind == "topk" and not mode.noise), seed=seed + i)
                    for i, (t, (values, ranking), original) in enumerate(zip(tokens, items, originals))]
            faithfulness[f"{order} {kind}"] = aggregate(rows, FAITHFULNESS_METRICS, seed=seed)
        agreements.update(agreement_table(order, explanations, originals, tokens, mode, seed))
        probes[order] = probe.stats.as_dict()
    return {**describe_lm(lm), "mode": mode.name, "data": data,
            "n_sentences": len(examples), "probe_mode": probe_mode, "p_source": source, "value_mode": value_mode,
            "faithfulness": faithfulness, "agreement": agreements, "probe_stats": probes,
            "wall_seconds": time.perf_counter() - start, "cache_entries": len(cache)}
