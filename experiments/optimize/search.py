"""The Optuna loop of ``selfx optimize``: NSGA-II over the variant space, every trial a nested MLflow run.

Objectives are measured on the dev slice: accuracy, and faithfulness as ERASER-bin comprehensiveness on
a dev sample through the cached probe (about 10 probe texts per sentence). The study lives in SQLite
storage, so an interrupted study resumes where it stopped. At the end the Pareto front and the paper
variant are evaluated on the held-out test slice with 95 % CIs and paired tests, and a Pareto plot is
logged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy

from experiments import progress, tracking
from experiments.config import ExperimentConfig, Variant
from experiments.optimize.compile import compile_with
from experiments.optimize.held_out import MINIMISE, held_out
from experiments.optimize.objective import OptimizerMetric, dev_objectives
from experiments.plots import pareto_plot
from experiments.run import log_evaluated_variant
from experiments.variants import (
    Evaluation,
    adapter_for,
    build_program,
    calibrate,
    config_digest,
    datasets,
    splits,
)
from programs.lm import make_lm
from programs.probe_cache import ProbeCache
from programs.types import InputError, first_line


def optimize(config: ExperimentConfig, *, uri: str | None = None) -> dict[str, Any]:
    import optuna

    experiment = f"selfx-{config.name}-optimize"
    objectives = list(config.search.objectives)
    directions = ["minimize" if o in MINIMISE else "maximize" for o in objectives]
    storage = config.search.storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a changed config (space, data, objectives) is a new study; more trials extend the same one
    same_search = config.search.model_copy(update={"trials": 1, "heartbeat_seconds": 30})
    same_study = config_digest(config.model_copy(update={"search": same_search}))[:8]
    try:  # before any model work: a bad storage must not cost a trial
        if storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if storage.startswith(("sqlite:", "postgresql", "mysql")):
            # heartbeats let Optuna fail the trial of a killed process (and, later, of a killed worker)
            storage = optuna.storages.RDBStorage(storage, heartbeat_interval=config.search.heartbeat_seconds,
                                                 grace_period=2 * config.search.heartbeat_seconds)
        study = optuna.create_study(study_name=f"selfx-{config.name}-{same_study}", storage=storage,
                                    directions=directions, sampler=optuna.samplers.NSGAIISampler(seed=config.seed),
                                    load_if_exists=True)
    except Exception as exc:  # SQLAlchemy, OSError and Optuna's own errors
        raise InputError(f"search.storage {config.search.storage} cannot be used ({type(exc).__name__}: "
                         f"{first_line(exc, 200)}): point it at "
                         "a writable sqlite:///path/optuna.db, or move a corrupt database aside") from exc
    lm = make_lm(config.lm, api_base=config.api_base, cache=True)
    cache = ProbeCache()
    train, dev, test = splits(config)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    optuna.storages.fail_stale_trials(study)
    # an interrupted optimisation reopens its parent run (the same Optuna study), so a kill leaves no orphan
    with tracking.parent_run(experiment, f"{config.name} optimize", digest=same_study, resume=True,
                             uri=uri or config.tracking_uri) as parent:
        dev_logged, test_logged = datasets(config, dev=dev), datasets(config, test=test)
        parent.log_inputs(datasets(config, dev=dev, test=test))
        parent.log_params({"config": config.name, "objectives": ",".join(objectives), "trials": config.search.trials,
                           "optimizer_metric": config.search.optimizer_metric,
                           "faithfulness_weight": config.search.faithfulness_weight,
                           "optimizer_budget": config.search.optimizer_budget,
                           "space": json.dumps(config.search.space), "storage": config.search.storage,
                           "sampler": "NSGA-II"})

        def objective(trial: optuna.Trial) -> tuple[float, ...]:
            try:
                return measured(trial)
            except ValueError as exc:  # a trial's own failure (its variant cannot run): recorded, then Optuna's
                trial.set_user_attr("failure", f"{type(exc).__name__}: {first_line(exc)}")
                raise

        def measured(trial: optuna.Trial) -> tuple[float, ...]:
            choice = {dim: trial.suggest_categorical(dim, list(options)) for dim, options in config.search.space.items()}
            variant = Variant(**choice)
            program = build_program(variant, lm, dev, cache, config.seed)
            if variant.optimizer != "none":
                metric = OptimizerMetric(config.search.optimizer_metric, config.search.faithfulness_weight, lm,
                                         config, cache, program=program, adapter=variant.adapter)
                with dspy.context(lm=lm, adapter=adapter_for(variant.adapter)):
                    program = compile_with(variant.optimizer, program, train, metric, lm,
                                           config.search.optimizer_budget, config.seed)
                    calibrate(program, dev)  # the optimiser changed the demos the bias was read with
            scores = dev_objectives(program, variant, lm, dev, config, cache)
            run_id = log_evaluated_variant(parent.run_id, experiment, variant, program, lm, config,
                                           Evaluation(scores, [], []), dev_logged, {"trial": trial.number})
            trial.set_user_attr("run_id", run_id)
            trial.set_user_attr("variant", variant.model_dump())
            return tuple(_objective_value(scores.get(o), o) for o in objectives)

        remaining = max(0, config.search.trials - len(done))
        study.optimize(objective, n_trials=remaining, catch=(ValueError,), show_progress_bar=progress.enabled())
        front = study.best_trials
        plot = pareto_plot(study.trials, front, objectives, study.study_name)
        if plot is not None:
            parent.log_file(plot)

        def log_held_out(label: str, variant: Variant, program: Any, evaluation: Any) -> str:
            return log_evaluated_variant(parent.run_id, experiment, variant.model_copy(), program, lm, config,
                                         evaluation, test_logged, {"held_out": 1.0}, name=f"held-out {label}")

        comparison = held_out(front, objectives, config, lm, dev, test, cache, log=log_held_out)
        parent.log_dict(comparison, "held_out_comparison.json")
        summary = summarise_study(study, front, objectives, comparison)
        parent.log_metrics(summary["metrics"])
        parent.describe(summary["description"])
    return {"experiment": experiment, "parent_run_id": parent.run_id, "study": study.study_name,
            "failed": [{"number": t.number, "failure": t.user_attrs.get("failure")} for t in study.trials
                       if t.state == optuna.trial.TrialState.FAIL],
            "trials": len(study.trials), "pareto": [{"number": t.number, "values": t.values,
                                                     "variant": t.user_attrs.get("variant"),
                                                     "run_id": t.user_attrs.get("run_id")} for t in front],
            "held_out": comparison, "summary": summary["description"]}


def _objective_value(value: float | None, objective: str) -> float:
    """A missing objective (no explanation, all failed) is the worst value, never a silent 0.5."""
    if value is None:
        return float("inf") if objective in MINIMISE else float("-inf")
    return float(value)


def summarise_study(study: Any, front: Sequence[Any], objectives: Sequence[str],
                    comparison: dict[str, Any]) -> dict[str, Any]:
    """What the parent run shows: the best dev value per objective, and each held-out candidate against the paper
    variant (differences with CIs and p-values), as metrics and a description."""
    import optuna

    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    metrics: dict[str, Any] = {"trials": len(study.trials), "trials_failed": len(failed), "pareto_size": len(front)}
    lines = [f"Optuna NSGA-II, {len(study.trials)} trials ({len(failed)} failed), {len(front)} on the Pareto front."]
    lines += [f"Trial {t.number} failed: {t.user_attrs.get('failure', 'no reason recorded (killed?)')}." for t in failed]
    for i, objective in enumerate(objectives):
        finite = [t for t in front if abs(t.values[i]) != float("inf")]
        if finite:
            best = (min if objective in MINIMISE else max)(finite, key=lambda t: t.values[i])
            metrics[f"best_dev_{objective}"] = best.values[i]
            lines.append(f"Best dev {objective}: trial {best.number} ({Variant(**best.user_attrs['variant']).name}) "
                         f"{best.values[i]:.3f}.")
    for label, row in comparison.items():
        key = label.replace("#", "_")
        for metric in ("accuracy", "comprehensiveness_bins"):
            for suffix in ("", "_ci_low", "_ci_high"):
                if row.get(metric + suffix) is not None:
                    metrics[f"heldout_{key}_{metric}{suffix}"] = row[metric + suffix]
        for objective in ("accuracy", "comprehensiveness"):
            diff = row.get(f"vs_paper_{objective}")
            if not diff or diff.get("difference") is None:
                continue
            for part in ("difference", "ci_low", "ci_high", "p_value"):
                metrics[f"heldout_{key}_vs_paper_{objective}_{part}"] = diff[part]
            verdict = "beats" if row["beats_paper"][objective] else "does not beat"
            lines.append(f"Held out, {label} ({row['variant']}) {verdict} the paper variant on {objective}: "
                         f"{diff['difference']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}], "
                         f"p = {diff['p_value']:.3f}, {diff['n']} sentences.")
    return {"metrics": metrics, "description": " ".join(lines)}
