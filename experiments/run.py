"""``selfx run CONFIG``: evaluate every configured variant and log each as a nested MLflow run.

One parent run per experiment; per variant: params (program, order, granularity, adapter, LM,
probe and metric mode, optimiser, seeds, git commit), metrics with CI bounds (accuracy, parse
failures, ECE, Brier, faithfulness, agreement with occlusion, random baseline, LM calls, cache
hits, tokens, wall time) and artifacts (the rendered prompt as the model sees it, the compiled
program JSON, a per-example table, the program as an MLflow model).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import dspy

from experiments.config import ExperimentConfig, Variant
from experiments.faithfulness_run import aggregate, sentence_faithfulness, values_and_ranking
from experiments.tracking import metric_key, use_experiment
from metrics.accuracy import accuracy
from metrics.agreement import agreement
from metrics.calibration import brier_score, expected_calibration_error
from metrics.faithfulness import rank_positions
from metrics.modes import metric_mode
from metrics.stats import mean_ci
from programs.data import load_examples
from programs.demos import build_demos
from programs.explainers import explainer
from programs.lean_adapter import LeanAdapter
from programs.lm import describe_lm, history_tokens, is_embedded, make_lm
from programs.probe import ProgramProbe
from programs.probe_cache import ProbeCache
from programs.readout import to_answer, to_attribution
from programs.self_explain import SentimentProgram
from programs.types import Example

FAITHFULNESS_LOGGED = ("comprehensiveness_bins", "sufficiency_bins", "comprehensiveness", "df_mit", "rankdel")


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
        if variant.decision in ("contextual", "batch"):
            if variant.decision == "batch" and not dev:
                raise ValueError("decision 'batch' needs a calibration batch: set data.dev_n > 0")
            program.calibrate([e.text for e in dev], batch_name=f"dev[:{len(dev)}]")
    return program


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
    adapter = adapter_for(variant.adapter)
    history_start = len(lm.history)
    started = time.perf_counter()
    threads = 1 if is_embedded(lm) else 8

    def metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
        return float(prediction.label is not None and prediction.label == example.label)

    devset = [dspy.Example(review=e.text, label="positive" if e.label else "negative").with_inputs("review")
              for e in test]
    with dspy.context(lm=lm, adapter=adapter):
        result = dspy.Evaluate(devset=devset, metric=metric, num_threads=threads, display_progress=False,
                               provide_traceback=False)(program)
    predictions = [prediction for _, prediction, _ in result.results]
    seconds = time.perf_counter() - started
    answers = [to_answer(p) for p in predictions]
    attributions = [to_attribution(p, e.text) for p, e in zip(predictions, test)]
    gold = [e.label for e in test]
    acc, scored = accuracy([a.label_int for a in answers], gold)
    ok = [(a, y) for a, y in zip(answers, gold) if a.ok]
    metrics: dict[str, float | None] = {
        **mean_ci([None if not a.ok else float(a.label_int == y) for a, y in zip(answers, gold)],
                  seed=config.seed).as_dict("accuracy"),
        "parse_failure_rate": sum(not a.ok for a in answers) / len(answers),
        "ece_stated": expected_calibration_error([a.confidence for a, _ in ok], [a.label_int == y for a, y in ok])
        if ok else None,
        "brier_stated": brier_score([a.p_positive["stated"] for a, _ in ok], [y for _, y in ok]) if ok else None,
        "wall_seconds": seconds, "seconds_per_example": seconds / len(test),
        "lm_calls": len(lm.history) - history_start,
        "tokens": history_tokens(lm.history[history_start:]),
    }
    metrics["accuracy"] = acc
    with_logprob = [(a, y) for a, y in ok if "logprob" in a.p_positive]
    if with_logprob:
        metrics["brier_logprob"] = brier_score([a.p_positive["logprob"] for a, _ in with_logprob],
                                               [y for _, y in with_logprob])
    if program.granularity is not None:
        metrics.update(faithfulness_metrics(test, answers, attributions, lm, config, cache))
    rows = [{"review": e.text, "gold": "positive" if e.label else "negative", "prediction": a.label,
             "confidence": a.confidence, "p_positive": json.dumps(a.p_positive),
             "importances": json.dumps(list(att.values) if att is not None and att.ranking is None else
                                       (list(att.ranking) if att is not None else None)),
             "parse_status": "ok" if a.ok else f"failed: {a.failure}"}
            for e, a, att in zip(test, answers, attributions)]
    return metrics, rows


def faithfulness_metrics(test: Sequence[Example], answers: Sequence, attributions: Sequence, lm: Any,
                         config: ExperimentConfig, cache: ProbeCache) -> dict[str, float | None]:
    """ERASER-bin comprehensiveness/sufficiency and friends on a test sample, random baseline and
    agreement with occlusion beside them; the probe is cached, so repeated variants are cheap."""
    mode = metric_mode(config.measure.mode)
    probe = ProgramProbe(SentimentProgram("P"), lm, mode=config.measure.probe, cache=cache)
    source = "logprob" if config.measure.probe == "logprob" else "stated"
    sample = list(zip(test, attributions))[: config.measure.faithfulness_n]
    calls_before = probe.stats.model_calls
    started = time.perf_counter()
    originals = probe.answers([e.text for e, _ in sample])
    out: dict[str, float | None] = {}
    kinds = {"self": [a for _, a in sample]}
    for name in config.measure.explainers:
        made = explainer(name, **({"p_source": source} if name in ("occlusion", "lime") else {}))
        kinds[name] = [made.explain(list(e.tokens), probe) for e, _ in sample]
    for kind, items in kinds.items():
        rows = []
        for i, ((example, _), attribution, original) in enumerate(zip(sample, items, originals)):
            if attribution is None:
                rows.append({})
                continue
            values, ranking = values_and_ranking(attribution, len(example.tokens))
            rows.append(sentence_faithfulness(list(example.tokens), values, ranking, original, probe.answers, mode,
                                              p_source=source, topk_single_step=ranking is not None,
                                              seed=config.seed + i))
        summary = aggregate(rows, FAITHFULNESS_LOGGED, seed=config.seed)
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
            out.update(mean_ci([a[metric] for a in agree], seed=config.seed).as_dict(f"agreement_occlusion_{metric}"))
    out["faithfulness_probe_calls"] = probe.stats.model_calls - calls_before
    out["faithfulness_cache_hits"] = probe.stats.cache_hits
    out["faithfulness_seconds"] = time.perf_counter() - started
    return out


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
    # A model logged earlier in this process (another run, even another store) stays "active" and
    # MLflow would attach these metrics to it: clear it so metrics belong to this run only.
    mlflow.clear_active_model()
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


def run_experiment(config: ExperimentConfig, *, uri: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate every variant of a config; returns the parent run id and each variant's run and metrics."""
    experiment = f"selfx-{config.name}"
    mlflow = use_experiment(uri or config.tracking_uri, experiment)
    lm = make_lm(config.lm, api_base=config.api_base, cache=True)
    cache = ProbeCache()
    _, dev, test = splits(config)
    results = []
    with mlflow.start_run(run_name=config.name) as parent:
        mlflow.log_params({"config": config.name, "lm": config.lm, "n_variants": len(config.variants),
                           "git_commit": git_commit()})
        mlflow.log_dict(asdict(config), "config.json")
        for i, variant in enumerate(config.variants, 1):
            if progress:
                print(f"[{i}/{len(config.variants)}] {variant.name}", flush=True)
            program = build_program(variant, lm, dev, cache, config.seed)
            metrics, rows = evaluate_variant(program, variant, lm, test, config, cache)
            run_id = log_variant(mlflow, program, variant, lm, config, metrics, rows, parent.info.run_id)
            results.append({"variant": variant.name, "run_id": run_id, "metrics": metrics})
    return {"experiment": experiment, "parent_run_id": parent.info.run_id, "variants": results}
