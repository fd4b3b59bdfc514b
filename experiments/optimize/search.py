"""The Optuna loop of ``selfx optimize``: NSGA-II over the variant space, every trial a nested MLflow run.

Objectives are measured on the dev slice: accuracy, and faithfulness as ERASER-bin comprehensiveness on
a dev sample through the cached probe (about 10 probe texts per sentence). The study lives in Optuna's RDB
storage (SQLite by default, PostgreSQL across machines), so an interrupted study resumes where it stopped
and several worker processes share its trials (``workers.py``). At the end the Pareto front and the paper
variant are evaluated on the held-out test slice with 95 % CIs and paired tests, and a Pareto plot is
logged, once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dspy
import optuna
from dspy.utils.exceptions import AdapterParseError

from experiments import progress, tracking
from experiments.config import ExperimentConfig, Variant
from experiments.optimize.compile import compile_with
from experiments.optimize.held_out import MINIMISE, held_out
from experiments.optimize.objective import OptimizerMetric, dev_objectives
from experiments.optimize.workers import (
    DUPLICATE_ATTR,
    FINISHED_ATTR,
    HELD_OUT_ATTR,
    PARENT_ATTR,
    counted_trials,
    open_storage,
    storage_lock,
    work,
    worker_threads,
)
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
from programs.probe_cache import DEFAULT_CACHE, ProbeCache
from programs.types import InputError, database_url, first_line, masked_url


@dataclass
class _Session:
    """What every worker of one study shares: the study, its MLflow parent run, the model, data and probe cache."""

    config: ExperimentConfig
    study: Any
    storage: str
    uri: str | None
    experiment: str
    parent: tracking.ParentRun
    lm: Any
    cache: ProbeCache
    train: list[Any]
    dev: list[Any]
    test: list[Any]

    @property
    def objectives(self) -> list[str]:
        return list(self.config.search.objectives)


def optimize(config: ExperimentConfig, *, uri: str | None = None, storage: str | None = None, workers: int = 1,
             probe_cache: str | None = None) -> dict[str, Any]:
    """Run (or join, or resume) the study of ``config``: ``workers`` local processes share its trials, and the same
    command on other machines with the same ``storage`` joins them; then the held-out comparison, once."""
    if workers < 1:
        raise InputError(f"--workers {workers}: give 1 or more worker processes")
    session = _open(config, uri=uri, storage=storage, probe_cache=probe_cache)
    if workers == 1:
        _trials(session)
        lost: list[int] = []
    else:
        lost = _spawn(session, workers)
    return _finish(session, lost)


def _open(config: ExperimentConfig, *, uri: str | None, storage: str | None, probe_cache: str | None,
          parent_run_id: str | None = None, sampler_seed: int | None = None) -> _Session:
    url = database_url(storage or config.search.storage)
    uri = uri or config.tracking_uri
    experiment = f"selfx-{config.name}-optimize"
    directions = ["minimize" if o in MINIMISE else "maximize" for o in config.search.objectives]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a changed config (space, data, objectives) is a new study; more trials, or the same study in another
    # database, extend or join the same one
    same_search = config.search.model_copy(update={"trials": 1, "heartbeat_seconds": 30, "storage": ""})
    digest = config_digest(config.model_copy(update={"search": same_search, "tracking_uri": None}))[:8]
    name = f"selfx-{config.name}-{digest}"
    try:  # before any model work: a bad storage must not cost a trial
        study = optuna.create_study(study_name=name, storage=open_storage(url, config.search.heartbeat_seconds),
                                    directions=directions, load_if_exists=True)
        study.sampler = _sampler(config, sampler_seed, resumed_after=len(study.trials))
    except InputError:
        raise
    except Exception as exc:  # SQLAlchemy, OSError and Optuna's own errors
        raise InputError(f"optimisation storage {masked_url(url)} cannot be used "
                         f"({type(exc).__name__}: {first_line(exc, 200)}): "
                         "point --storage (or search.storage) at a writable sqlite:///path/optuna.db or a reachable "
                         "postgresql+psycopg://user@host:port/db, or move a corrupt database aside") from exc
    # several machines share one cache as a table of the study's PostgreSQL database; one machine, a SQLite file
    cache = ProbeCache(probe_cache or (url if url.startswith("postgresql") else DEFAULT_CACHE))
    if parent_run_id is None:
        # the first worker creates the parent run; the others (and a resumed study) find it in the study
        with storage_lock(url, name):
            parent = tracking.shared_parent(experiment, f"{config.name} optimize", digest=digest, uri=uri,
                                            run_id=study.user_attrs.get(PARENT_ATTR))
            if not parent.resumed:
                study.set_user_attr(PARENT_ATTR, parent.run_id)
    else:
        parent = tracking.ParentRun(parent_run_id, resumed=True)
        tracking.use_experiment(uri, experiment)
    train, dev, test = splits(config)
    session = _Session(config, study, url, uri, experiment, parent, make_lm(config.lm, api_base=config.api_base,
                                                                              cache=True), cache, train, dev, test)
    if not parent.resumed:
        parent.log_inputs(datasets(config, dev=dev, test=test))
        parent.log_params({"config": config.name, "objectives": ",".join(session.objectives),
                           "trials": config.search.trials, "optimizer_metric": config.search.optimizer_metric,
                           "faithfulness_weight": config.search.faithfulness_weight,
                           "optimizer_budget": config.search.optimizer_budget,
                           "space": json.dumps(config.search.space), "storage": masked_url(url),
                           "sampler": "NSGA-II", "population_size": population_size(config),
                           "study": name})
    return session


# A trial's own failure, recorded on it while the study goes on: a variant that cannot run (ValueError), or an
# optimiser whose LM wrote an answer its adapter cannot parse (MIPROv2's instruction proposals on a small model).
TRIAL_FAILURES = (ValueError, AdapterParseError)


def skip_if_measured(trial: Any, variant: Variant) -> None:
    """Prune a trial whose variant a completed trial already measured (NSGA-II's crossover often recreates a parent
    in a small categorical space); it is marked, and the budget does not count it. Variants are compared by name,
    which leaves out what they do not use (a top-k program's format, a zero-demo program's demo source)."""
    same = [t.number for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if Variant(**t.user_attrs["variant"]).name == variant.name]
    if same:
        trial.set_user_attr(DUPLICATE_ATTR, same[0])
        raise optuna.TrialPruned(f"the variant of trial {same[0]}")


def distinct_variants(space: dict[str, Sequence[Any]]) -> int:
    """How many different programs a search space holds (variants that differ only in what they do not use count
    once)."""
    return len({Variant(**dict(zip(space, values, strict=True))).name for values in itertools.product(*space.values())})


def _sampler(config: ExperimentConfig, seed: int | None = None, *,
             resumed_after: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler. Generations of a quarter of the budget, so a 16-trial study evolves over four (Optuna's
    default of 50 would leave any budget under 50 a random search). A study resumed after ``n`` trials draws a
    fresh random stream (seed + n): the same seed would propose the first trials' variants again."""
    return optuna.samplers.NSGAIISampler(population_size=population_size(config),
                                         seed=(config.seed if seed is None else seed) + resumed_after)


def population_size(config: ExperimentConfig) -> int:
    """NSGA-II's generation size for the config's trial budget."""
    return max(2, min(50, config.search.trials // 4))


def _trials(session: _Session) -> None:
    """This process's share of the trials: each a variant built, maybe compiled, measured on dev, logged as a
    nested run under the study's parent."""
    config, lm, dev, cache = session.config, session.lm, session.dev, session.cache
    dev_logged = datasets(config, dev=dev)
    # the budget buys distinct variants, unless the space has fewer than the budget (then a variant is measured again)
    distinct = config.search.trials <= distinct_variants(config.search.space)

    def objective(trial: Any) -> tuple[float, ...]:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            return measured(trial)
        except TRIAL_FAILURES as exc:  # a trial's own failure (its variant cannot run): recorded, then Optuna's
            trial.set_user_attr("failure", f"{type(exc).__name__}: {first_line(exc)}")
            raise

    def measured(trial: Any) -> tuple[float, ...]:
        choice = {dim: trial.suggest_categorical(dim, list(options)) for dim, options in config.search.space.items()}
        variant = Variant(**choice)
        trial.set_user_attr("variant", variant.model_dump())
        if distinct:
            skip_if_measured(trial, variant)
        program = build_program(variant, lm, dev, cache, config.seed)
        if variant.optimizer != "none":
            metric = OptimizerMetric(config.search.optimizer_metric, config.search.faithfulness_weight, lm,
                                     config, cache, program=program, adapter=variant.adapter)
            with dspy.context(lm=lm, adapter=adapter_for(variant.adapter)):
                program = compile_with(variant.optimizer, program, session.train, metric, lm,
                                       config.search.optimizer_budget, config.seed)
                calibrate(program, dev, cache)  # the optimiser changed the demos the bias was read with
        scores = dev_objectives(program, variant, lm, dev, config, cache)
        run_id = log_evaluated_variant(session.parent.run_id, session.experiment, variant, program, lm, config,
                                       Evaluation(scores, [], []), dev_logged, {"trial": trial.number})
        trial.set_user_attr("run_id", run_id)
        return tuple(_objective_value(scores.get(o), o) for o in session.objectives)

    work(session.study, objective, config.search.trials, storage=session.storage,
         poll_seconds=min(5.0, config.search.heartbeat_seconds / 2), catch=TRIAL_FAILURES)


def _spawn(session: _Session, workers: int) -> list[int]:
    """``workers`` processes share the trials; the exit codes of those that did not end cleanly."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked llama.cpp or DB handles
    processes = [context.Process(target=_worker, name=f"selfx-worker-{i}", args=(
        session.config.model_dump_json(), session.uri, session.storage, session.cache.location,
        session.parent.run_id, worker_threads(workers))) for i in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return [p.exitcode for p in processes if p.exitcode != 0]


def _worker(config_json: str, uri: str | None, storage: str, probe_cache: str, parent_run_id: str,
            threads: int) -> None:
    os.environ["SELFX_THREADS"] = str(threads)  # the cores shared out among the workers' embedded models
    progress.QUIET = True  # one bar per worker would garble the terminal
    config = ExperimentConfig.model_validate_json(config_json)
    # samplers seeded alike would propose the same variants in every worker: each worker draws its own stream
    # (the study's history, which every sampler reads, is what the workers share)
    seed = int(hashlib.sha256(f"{config.seed}:{socket.gethostname()}:{os.getpid()}".encode()).hexdigest()[:8], 16)
    _trials(_open(config, uri=uri, storage=storage, probe_cache=probe_cache, parent_run_id=parent_run_id,
                  sampler_seed=seed))


def _finish(session: _Session, lost: list[int]) -> dict[str, Any]:
    """Once every trial has ended: the Pareto plot, the held-out comparison and the summary on the parent run, done
    by one worker (the others wait for it and read its results), then the parent closed."""
    study, config, parent = session.study, session.config, session.parent
    objectives = session.objectives
    states = optuna.trial.TrialState
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    pending = [t.number for t in trials if t.state in (states.RUNNING, states.WAITING)]
    counted = len(counted_trials(trials))
    if pending or counted < config.search.trials:
        raise RuntimeError(f"the study is not complete ({counted} of {config.search.trials} trials, "
                           f"{len(pending)} running or queued; worker exit codes {lost}): run the same command "
                           "again to resume it")
    with storage_lock(session.storage, study.study_name):
        trials = study.get_trials()
        marker = ",".join(str(t.number) for t in trials if t.state in (states.COMPLETE, states.FAIL))
        front = study.best_trials
        if study.user_attrs.get(HELD_OUT_ATTR) == marker:  # another worker finished this study already
            comparison = tracking.load_dict(parent.run_id, "held_out_comparison.json")
            summary = summarise_study(study, front, objectives, comparison)
        else:
            plot = pareto_plot(trials, front, objectives, study.study_name)
            if plot is not None:
                parent.log_file(plot)
            test_logged = datasets(config, test=session.test)

            def log_held_out(label: str, variant: Variant, program: Any, evaluation: Any) -> str:
                return log_evaluated_variant(parent.run_id, session.experiment, variant.model_copy(), program,
                                             session.lm, config, evaluation, test_logged, {"held_out": 1.0},
                                             name=f"held-out {label}")

            comparison = held_out(front, objectives, config, session.lm, session.dev, session.test, session.cache,
                                  log=log_held_out)
            parent.log_dict(comparison, "held_out_comparison.json")
            summary = summarise_study(study, front, objectives, comparison)
            parent.log_metrics(summary["metrics"])
            parent.describe(summary["description"])
            study.set_user_attr(FINISHED_ATTR, datetime.now().isoformat())
            study.set_user_attr(HELD_OUT_ATTR, marker)
        tracking.end_parent(parent)  # again when another worker finished first: this one had reopened it
    return {"experiment": session.experiment, "parent_run_id": parent.run_id, "study": study.study_name,
            "storage": masked_url(session.storage), "lost_workers": lost,
            "failed": [{"number": t.number, "failure": t.user_attrs.get("failure"),
                        "worker": t.user_attrs.get("worker")} for t in trials if t.state == states.FAIL],
            "trials": len(trials), "wall_seconds": _wall_seconds(trials, study.user_attrs.get(FINISHED_ATTR)),
            "trial_table": [{"number": t.number, "state": t.state.name, "values": t.values,
                             "variant": t.user_attrs.get("variant"), "run_id": t.user_attrs.get("run_id"),
                             "failure": t.user_attrs.get("failure"), "duplicate_of": t.user_attrs.get(DUPLICATE_ATTR),
                             "seconds": t.duration.total_seconds() if t.duration else None} for t in trials],
            "pareto": [{"number": t.number, "values": t.values, "variant": t.user_attrs.get("variant"),
                        "run_id": t.user_attrs.get("run_id")} for t in front],
            "held_out": comparison, "summary": summary["description"]}


def _wall_seconds(trials: Sequence[Any], finished: str | None) -> float | None:
    """From the first trial's start to the held-out comparison's end: the study's wall time, pauses and
    resumptions included."""
    starts = [t.datetime_start for t in trials if t.datetime_start]
    if not starts or not finished:
        return None
    return (datetime.fromisoformat(finished) - min(starts)).total_seconds()


def _objective_value(value: float | None, objective: str) -> float:
    """A missing objective (no explanation, all failed) is the worst value, never a silent 0.5."""
    if value is None:
        return float("inf") if objective in MINIMISE else float("-inf")
    return float(value)


def summarise_study(study: Any, front: Sequence[Any], objectives: Sequence[str],
                    comparison: dict[str, Any]) -> dict[str, Any]:
    """What the parent run shows: the best dev value per objective, and each held-out candidate against the paper
    variant (differences with CIs and p-values), as metrics and a description."""
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    duplicates = [t for t in study.trials if DUPLICATE_ATTR in t.user_attrs]
    metrics: dict[str, Any] = {"trials": len(study.trials), "trials_failed": len(failed),
                               "trials_duplicate": len(duplicates), "pareto_size": len(front)}
    lines = [f"Optuna NSGA-II, {len(study.trials)} trials ({len(failed)} failed, {len(duplicates)} proposing an "
             f"already measured variant), {len(front)} on the Pareto front."]
    lines += [f"Trial {t.number} failed: {t.user_attrs.get('failure', 'no reason recorded (killed?)')}."
              for t in failed]
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
            for part in ("difference", "ci_low", "ci_high", "p_value", "mcnemar_p_value"):
                if part in diff:
                    metrics[f"heldout_{key}_vs_paper_{objective}_{part}"] = diff[part]
            verdict = "beats" if row["beats_paper"][objective] else "does not beat"
            lines.append(f"Held out, {label} ({row['variant']}) {verdict} the paper variant on {objective}: "
                         f"{diff['difference']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}], "
                         f"p = {diff['p_value']:.3f}"
                         + (f" (McNemar {diff['mcnemar_p_value']:.3f})" if "mcnemar_p_value" in diff else "")
                         + f", {diff['n']} sentences.")
    return {"metrics": metrics, "description": " ".join(lines)}
