"""``selfx run CONFIG``: evaluate every configured variant and log each as a nested MLflow run.

One parent run per experiment; per variant: params (program, order, granularity, adapter, LM,
probe and metric mode, optimiser, seeds, git commit), metrics with CI bounds (accuracy, parse
failures, ECE, Brier, faithfulness, agreement with occlusion, random baseline, LM calls, cache
hits, tokens, wall time) and artifacts (the rendered prompt as the model sees it, the compiled
program JSON, a per-example table, the program as an MLflow model).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path
from statistics import median
from typing import Any, Sequence

import dspy

from experiments.config import ExperimentConfig, Variant
from experiments.evaluate import run_program
from experiments.faithfulness_run import explanation_faithfulness
from experiments.tracking import metric_key, use_experiment
from metrics.accuracy import accuracy
from metrics.calibration import brier_score, expected_calibration_error
from metrics.stats import mean_ci
from programs.data import load_examples
from programs.demos import build_demos
from programs.lean_adapter import LeanAdapter
from programs.lm import describe_lm, is_embedded, make_lm
from programs.probe_cache import ProbeCache
from programs.self_explain import SentimentProgram
from programs.types import Attribution, Example

PER_SENTENCE = ("comprehensiveness_bins", "sufficiency_bins", "comprehensiveness")  # columns of the example table


def adapter_for(name: str) -> dspy.Adapter:
    return {"lean": LeanAdapter, "json": dspy.JSONAdapter, "chat": dspy.ChatAdapter}[name]()


def splits(config: ExperimentConfig) -> tuple[list[Example], list[Example], list[Example]]:
    """(train pool, dev, test): dev and test are consecutive, disjoint slices of the eval split."""
    data = config.data
    train = load_examples(data.source, split=data.train_split, n=data.train_n) if data.train_n else []
    held = load_examples(data.source, split=data.eval_split, n=data.dev_n + data.test_n)
    return train, held[: data.dev_n], held[data.dev_n: data.dev_n + data.test_n]


def build_program(variant: Variant, lm: Any, dev: Sequence[Example], cache: ProbeCache, seed: int) -> SentimentProgram:
    """The variant's program with its demos and, for calibrated decisions, its calibration."""
    program = SentimentProgram(variant.program, value_mode=variant.value_mode, decision=variant.decision)
    adapter = adapter_for(variant.adapter)
    with dspy.context(lm=lm, adapter=adapter):
        if variant.demos:
            program.predict.demos = build_demos(variant.program, variant.demos, lm=lm, source=variant.demo_source,
                                                seed=seed, cache=cache)
        calibrate(program, dev)
    return program


def calibrate(program: SentimentProgram, dev: Sequence[Example]) -> None:
    """Calibrate a program whose decision rule needs it (on the dev slice for ``batch``); call it
    again whenever the program's demos change (an optimiser), since the bias depends on them."""
    if program.decision not in ("contextual", "batch"):
        return
    if program.decision == "batch" and not dev:
        raise ValueError("decision 'batch' needs a calibration batch: set data.dev_n > 0")
    program.calibrate([e.text for e in dev], batch_name=f"dev[:{len(dev)}]")


def rendered_prompt(program: SentimentProgram, variant: Variant, lm: Any) -> str:
    """The prompt exactly as the model sees it (chat template or plain text), with demos."""
    adapter = adapter_for(variant.adapter)
    inputs = {"review": "{review}"}
    if program.granularity == "topk":
        inputs["k"] = "{k}"
    messages = adapter.format(program.predict.signature, program.predict.demos, inputs)
    if is_embedded(lm):
        return lm.engine.render(messages)
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def evaluate_variant(program: SentimentProgram, variant: Variant, lm: Any, test: Sequence[Example],
                     config: ExperimentConfig, cache: ProbeCache) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Metrics of one variant and its per-example rows."""
    ran = run_program(program, test, lm, adapter=adapter_for(variant.adapter))
    answers, attributions = ran.answers, ran.attributions
    gold = [e.label for e in test]
    acc, _ = accuracy([a.label_int for a in answers], gold)
    ok = [(a, y) for a, y in zip(answers, gold) if a.ok]
    metrics: dict[str, float | None] = {
        **mean_ci([None if not a.ok else float(a.label_int == y) for a, y in zip(answers, gold)],
                  seed=config.seed).as_dict("accuracy"),
        "parse_failure_rate": sum(not a.ok for a in answers) / len(answers),
        "ece_stated": expected_calibration_error([a.confidence for a, _ in ok], [a.label_int == y for a, y in ok])
        if ok else None,
        "brier_stated": brier_score([a.p_positive["stated"] for a, _ in ok], [y for _, y in ok]) if ok else None,
        "wall_seconds": ran.seconds, "seconds_per_example": ran.seconds / len(test),
        "seconds_per_example_median": median(ran.durations),
        "lm_calls": ran.lm_calls, "tokens": ran.tokens,
    }
    metrics["accuracy"] = acc
    with_logprob = [(a, y) for a, y in ok if "logprob" in a.p_positive]
    if with_logprob:
        metrics["brier_logprob"] = brier_score([a.p_positive["logprob"] for a, _ in with_logprob],
                                               [y for _, y in with_logprob])
    per_sentence: list[dict[str, float | None]] = []
    if program.granularity is not None:
        faithfulness, per_sentence = faithfulness_metrics(test, attributions, lm, config, cache)
        metrics.update(faithfulness)
    rows = [{"review": e.text, "gold": "positive" if e.label else "negative", "prediction": a.label,
             "confidence": a.confidence, "p_positive": json.dumps(a.p_positive),
             "importances": json.dumps(list(att.values) if att is not None and att.ranking is None else
                                       (list(att.ranking) if att is not None else None)),
             "parse_status": "ok" if a.ok else f"failed: {a.failure}",
             "seconds": round(seconds, 3),
             **{key: (per_sentence[i].get(key) if i < len(per_sentence) else None) for key in PER_SENTENCE}}
            for i, (e, a, att, seconds) in enumerate(zip(test, answers, attributions, ran.durations))]
    return metrics, rows


def faithfulness_metrics(test: Sequence[Example], attributions: Sequence[Attribution | None], lm: Any,
                         config: ExperimentConfig, cache: ProbeCache
                         ) -> tuple[dict[str, float | None], list[dict[str, float | None]]]:
    """The config's faithfulness measurement of a variant's explanations on its test sample."""
    measure = config.measure
    return explanation_faithfulness(test[: measure.faithfulness_n], attributions[: measure.faithfulness_n], lm,
                                    mode_name=measure.mode, probe_mode=measure.probe, explainers=measure.explainers,
                                    seed=config.seed, cache=cache)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def variant_params(variant: Variant, program: SentimentProgram, lm: Any, config: ExperimentConfig) -> dict[str, Any]:
    lm_info = describe_lm(lm)
    return {
        **asdict(variant), "order": program.order, "granularity": program.granularity or "none",
        "k_fraction": program.k_fraction if program.granularity == "topk" else "none",
        "lm": lm_info["model"], "lm_spec": config.lm, "backend": lm_info["backend"], "temperature": lm.kwargs.get("temperature"),
        "max_tokens": lm.kwargs.get("max_tokens"), "probe_mode": config.measure.probe,
        "metric_mode": config.measure.mode, "seed": config.seed, "data_seed": config.data.seed,
        "data": config.data.source, "test_n": config.data.test_n, "git_commit": git_commit(),
        "calibration": json.dumps(program.calibration) if program.calibration else "none",
    }


def log_variant(mlflow: Any, program: SentimentProgram, variant: Variant, lm: Any, config: ExperimentConfig,
                metrics: dict[str, float | None], rows: list[dict[str, Any]], parent_run_id: str) -> str:
    """One nested run with params, metrics and artifacts (explicit parent id: safe from any thread)."""
    with mlflow.start_run(run_name=variant.name, nested=True, parent_run_id=parent_run_id) as run:
        mlflow.set_tags({"selfx.variant": variant.name, "selfx.program": variant.program})
        mlflow.log_params({k: str(v) for k, v in variant_params(variant, program, lm, config).items()})
        mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v})
        mlflow.log_text(rendered_prompt(program, variant, lm), "prompts/predict.txt")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "program.json"
            program.save(str(path), save_program=False)
            mlflow.log_artifact(str(path))
        mlflow.log_table({k: [row[k] for row in rows] for k in rows[0]}, artifact_file="examples.json")
        with dspy.context(lm=lm, adapter=adapter_for(variant.adapter)):
            mlflow.dspy.log_model(program, name="program", input_example={"review": rows[0]["review"]})
        return run.info.run_id


def config_digest(config: ExperimentConfig) -> str:
    """Identifies a config's content (not its file name): an interrupted run resumes only the same config."""
    return hashlib.sha256(json.dumps(asdict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _interrupted_parent(mlflow: Any, experiment: str, digest: str) -> Any | None:
    """The newest parent run of this config that did not finish (killed, failed or still marked running)."""
    client = mlflow.MlflowClient()
    found = client.search_runs([mlflow.get_experiment_by_name(experiment).experiment_id],
                               filter_string=f"tags.`selfx.config_digest` = '{digest}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found and found[0].info.status != "FINISHED" else None


def _finished_variants(mlflow: Any, parent: Any) -> dict[str, Any]:
    """Variant name -> its finished nested run under ``parent``."""
    children = mlflow.MlflowClient().search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {run.data.tags.get("selfx.variant"): run for run in children if run.info.status == "FINISHED"}


def run_experiment(config: ExperimentConfig, *, uri: str | None = None, progress: bool = True,
                   resume: bool = True) -> dict[str, Any]:
    """Evaluate every variant of a config; returns the parent run id and each variant's run and metrics.

    With ``resume`` (the default), an interrupted run of the same config is reopened and the variants
    it finished are kept, not recomputed (their metrics come back from MLflow); a finished run of the
    config is never reopened: a repeat starts a new parent run (answers then come from the caches).
    """
    experiment = f"selfx-{config.name}"
    mlflow = use_experiment(uri or config.tracking_uri, experiment)
    lm = make_lm(config.lm, api_base=config.api_base, cache=True)
    cache = ProbeCache()
    _, dev, test = splits(config)
    digest = config_digest(config)
    previous = _interrupted_parent(mlflow, experiment, digest) if resume else None
    done = _finished_variants(mlflow, previous) if previous is not None else {}
    results = []
    opened = (mlflow.start_run(run_id=previous.info.run_id) if previous is not None else
              mlflow.start_run(run_name=config.name, tags={"selfx.config_digest": digest}))
    with opened as parent:
        if previous is None:
            mlflow.log_params({"config": config.name, "lm": config.lm, "n_variants": len(config.variants),
                               "git_commit": git_commit()})
            mlflow.log_dict(asdict(config), "config.json")
        elif progress:
            print(f"resuming run {parent.info.run_id}: {len(done)} of {len(config.variants)} variants already "
                  "finished", flush=True)
        for i, variant in enumerate(config.variants, 1):
            if variant.name in done:
                kept = done[variant.name]
                results.append({"variant": variant.name, "run_id": kept.info.run_id, "metrics": kept.data.metrics,
                                "resumed": True})
                continue
            if progress:
                print(f"[{i}/{len(config.variants)}] {variant.name}", flush=True)
            program = build_program(variant, lm, dev, cache, config.seed)
            metrics, rows = evaluate_variant(program, variant, lm, test, config, cache)
            run_id = log_variant(mlflow, program, variant, lm, config, metrics, rows, parent.info.run_id)
            results.append({"variant": variant.name, "run_id": run_id, "metrics": metrics})
    return {"experiment": experiment, "parent_run_id": parent.info.run_id, "variants": results}
