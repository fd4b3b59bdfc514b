"""``selfx run CONFIG``: evaluate every configured variant and log each as a nested MLflow run.

One parent run per experiment; per variant: params (program, order, granularity, adapter, LM, probe and
metric mode, optimiser, seeds), metrics with CI bounds (accuracy, parse failures, ECE, Brier,
faithfulness, agreement with occlusion, random baseline, LM calls, cache hits, tokens, wall time) and
artifacts (the rendered prompt as the model sees it, the compiled program JSON, a per-example table,
the program as an MLflow model). An interrupted run of the same config resumes.
"""

from __future__ import annotations

from typing import Any

import dspy

from experiments import tracking
from experiments.config import ExperimentConfig
from experiments.variants import (
    adapter_for,
    build_program,
    config_digest,
    evaluate_variant,
    rendered_prompt,
    splits,
    variant_params,
)
from programs.lm import make_lm
from programs.probe_cache import ProbeCache


def run_variants(config: ExperimentConfig, *, uri: str | None = None, progress: bool = True,
                 resume: bool = True) -> dict[str, Any]:
    """Evaluate every variant of a config; returns the parent run id and each variant's run and metrics.

    With ``resume`` (the default), an interrupted run of the same config is reopened and the variants
    it finished are kept, not recomputed (their metrics come back from MLflow); a finished run of the
    config is never reopened: a repeat starts a new parent run (answers then come from the caches).
    """
    experiment = f"selfx-{config.name}"
    lm = make_lm(config.lm, api_base=config.api_base, cache=True)
    cache = ProbeCache()
    _, dev, test = splits(config)
    results = []
    with tracking.parent_run(experiment, config.name, digest=config_digest(config), resume=resume,
                             uri=uri or config.tracking_uri) as parent:
        if not parent.resumed:
            parent.log_params({"config": config.name, "lm": config.lm, "n_variants": len(config.variants)})
            parent.log_dict(config.model_dump(mode="json"), "config.json")
        elif progress:
            print(f"resuming run {parent.run_id}: {len(parent.finished)} of {len(config.variants)} variants already "
                  "finished", flush=True)
        for i, variant in enumerate(config.variants, 1):
            if variant.name in parent.finished:
                kept = parent.finished[variant.name]
                results.append({"variant": variant.name, "run_id": kept["run_id"], "metrics": kept["metrics"],
                                "resumed": True})
                continue
            if progress:
                print(f"[{i}/{len(config.variants)}] {variant.name}", flush=True)
            program = build_program(variant, lm, dev, cache, config.seed)
            metrics, rows = evaluate_variant(program, variant, lm, test, config, cache)
            run_id = tracking.log_variant(
                parent.run_id, variant.name, params=variant_params(variant, program, lm, config), metrics=metrics,
                tags={"selfx.program": variant.program}, prompt=rendered_prompt(program, variant.adapter, lm),
                program=program, rows=rows, context=dspy.context(lm=lm, adapter=adapter_for(variant.adapter)))
            results.append({"variant": variant.name, "run_id": run_id, "metrics": metrics})
    return {"experiment": experiment, "parent_run_id": parent.run_id, "variants": results}
