"""``selfx run CONFIG``: evaluate every configured variant and log each as a nested MLflow run.

One parent run per experiment, carrying the summary (the best variant per metric, a description of what was
run and what won, the datasets, the HTML report); per variant: params, a description, its datasets as
inputs, metrics with CI bounds (accuracy, parse failures, ECE, Brier, faithfulness beside occlusion and the
random baseline, paired differences, agreement with occlusion, LM calls, tokens, wall time) and artifacts (the
rendered prompt, registered and linked; the compiled program JSON; a per-example table; the per-sentence
explanations; the program as an MLflow model). An interrupted run of the same config resumes.
"""

from __future__ import annotations

import sys
from typing import Any

import dspy

from experiments import progress, tracking
from experiments.config import ExperimentConfig
from experiments.variants import (
    adapter_for,
    build_program,
    config_digest,
    datasets,
    describe_variant,
    evaluate_variant,
    prompt_template,
    rendered_prompt,
    splits,
    variant_params,
)
from programs.lm import make_lm
from programs.probe_cache import ProbeCache

SUMMARY = (("accuracy", max), ("comprehensiveness_bins", max), ("comprehensiveness_bins_vs_random", max))


def log_evaluated_variant(parent_run_id: str, experiment: str, variant: Any, program: Any, lm: Any,
                          config: ExperimentConfig, evaluation: Any, splits_logged: dict[str, Any],
                          extra_metrics: dict[str, Any] | None = None, name: str | None = None) -> str:
    """One variant's nested run, as run and optimize log it."""
    return tracking.log_variant(
        parent_run_id, name or variant.name, params=variant_params(variant, program, lm, config),
        metrics={**evaluation.metrics, **(extra_metrics or {})},
        tags={"selfx.program": variant.program, tracking.VARIANT_TAG: variant.name},
        prompt=rendered_prompt(program, variant.adapter, lm), program=program, rows=evaluation.rows,
        context=dspy.context(lm=lm, adapter=adapter_for(variant.adapter)),
        description=describe_variant(variant, program, lm),
        datasets=splits_logged, prompt_template=prompt_template(program, variant.adapter),
        prompt_name=f"{experiment}-{variant.program}", explanations=evaluation.explanations or None)


def run_variants(config: ExperimentConfig, *, uri: str | None = None, resume: bool = True) -> dict[str, Any]:
    """Evaluate every variant of a config; returns the parent run id and each variant's run and metrics.

    With ``resume`` (the default), an interrupted run of the same config is reopened and the variants
    it finished are kept, not recomputed (their metrics come back from MLflow); a finished run of the
    config is never reopened: a repeat starts a new parent run (answers then come from the caches).
    """
    experiment = f"selfx-{config.name}"
    lm = make_lm(config.lm, api_base=config.api_base, cache=True)
    cache = ProbeCache()
    _, dev, test = splits(config)
    logged = datasets(config, test=test)
    results = []
    with tracking.parent_run(experiment, config.name, digest=config_digest(config), resume=resume,
                             uri=uri or config.tracking_uri) as parent:
        if not parent.resumed:
            parent.log_params({"config": config.name, "lm": config.lm, "n_variants": len(config.variants)})
            parent.log_dict(config.model_dump(mode="json"), "config.json")
            parent.log_inputs(datasets(config, dev=dev, test=test))
        else:
            print(f"resuming run {parent.run_id}: {len(parent.finished)} of {len(config.variants)} variants already "
                  "finished", file=sys.stderr, flush=True)
        for variant in progress.track(config.variants, "variants"):
            if variant.name in parent.finished:
                kept = parent.finished[variant.name]
                results.append({"variant": variant.name, "run_id": kept["run_id"], "metrics": kept["metrics"],
                                "resumed": True})
                continue
            program = build_program(variant, lm, dev, cache, config.seed)
            evaluation = evaluate_variant(program, variant, lm, test, config, cache)
            run_id = log_evaluated_variant(parent.run_id, experiment, variant, program, lm, config, evaluation, logged)
            results.append({"variant": variant.name, "run_id": run_id, "metrics": evaluation.metrics})
        summary = summarise(results)
        parent.log_metrics(summary["metrics"])
        parent.describe(summary["description"] + f" Config {config.name}: {len(config.variants)} variants on "
                        f"{len(test)} {config.data.source} sentences ({config.data.eval_split}), faithfulness on "
                        f"the first {config.measure.faithfulness_n}, {config.lm}.")
    return {"experiment": experiment, "parent_run_id": parent.run_id, "variants": results, **summary}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The best variant per summary metric, as parent-run metrics and one sentence each."""
    metrics: dict[str, Any] = {"n_variants": len(results)}
    lines, best = [], {}
    for metric, pick in SUMMARY:
        scored = [r for r in results if r["metrics"].get(metric) is not None]
        if not scored:
            continue
        winner = pick(scored, key=lambda r: r["metrics"][metric])
        best[metric] = winner["variant"]
        m = winner["metrics"]
        metrics[f"best_{metric}"] = m[metric]
        for bound in ("ci_low", "ci_high"):
            if f"{metric}_{bound}" in m:
                metrics[f"best_{metric}_{bound}"] = m[f"{metric}_{bound}"]
        ci = (f" [{m[metric + '_ci_low']:.3f}, {m[metric + '_ci_high']:.3f}]" if m.get(metric + "_ci_low") is not None
              else "")
        lines.append(f"best {metric}: {winner['variant']} {m[metric]:.3f}{ci}")
    return {"metrics": metrics, "best": best, "description": "; ".join(lines) + "." if lines else "No variant scored."}
