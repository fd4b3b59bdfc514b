"""How workers share one Optuna study (experiments/optimize/workers.py), with real processes on a SQLite storage
and a trivial objective: the budget is exact however the workers race, and a SIGKILLed worker's trial is failed by
its silent heartbeat and run again by another worker. (The same on PostgreSQL with the real programs:
tests/test_scale_out.py.)"""

import multiprocessing
import os
import signal
import time

import optuna

from experiments.optimize.workers import counted_trials, open_storage, work


def _worker(url: str, budget: int, seconds: float, slow_first: float = 0.0) -> None:
    study = optuna.load_study(study_name="s", storage=open_storage(url, 1))
    first = [True]

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", os.getpid())
        x = trial.suggest_float("x", 0, 1)
        time.sleep(slow_first if first[0] and slow_first else seconds)
        first[0] = False
        return x

    work(study, objective, budget, storage=url, poll_seconds=0.1)


def _study(tmp_path) -> tuple[str, optuna.Study]:
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=open_storage(url, 1))
    return url, study


def _start(*args) -> multiprocessing.Process:
    process = multiprocessing.get_context("spawn").Process(target=_worker, args=args)
    process.start()
    return process


def test_three_workers_in_lockstep_start_exactly_the_budget(tmp_path):
    url, study = _study(tmp_path)
    workers = [_start(url, 7, 0.3) for _ in range(3)]  # equal trial lengths: they finish in the same instant
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    trials = study.get_trials()
    assert len(trials) == 7 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 3


def test_a_killed_workers_trial_fails_and_is_run_again(tmp_path):
    url, study = _study(tmp_path)
    victim = _start(url, 4, 0.2, 60.0)  # its first trial would take a minute
    deadline = time.time() + 60
    while not [t for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)) if t.params]:  # mid-trial
        assert time.time() < deadline
        time.sleep(0.05)
    survivor = _start(url, 4, 0.2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    survivor.join(120)
    assert survivor.exitcode == 0
    trials = study.get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["worker"] == victim.pid
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == failed[0].params  # the same variant, run again
    assert len(counted_trials(trials)) == 4 and len(trials) == 5


def test_a_trial_killed_before_its_first_heartbeat_is_failed_too(tmp_path):
    """Optuna never calls a RUNNING trial without a heartbeat stale; a worker killed between asking for a trial and
    its first heartbeat would leave it RUNNING for ever and the other workers waiting for it."""
    url, study = _study(tmp_path)
    orphan = study.ask()  # RUNNING, and no heartbeat thread ever beats for it
    time.sleep(4.5)  # twice the grace period (2 s)
    _worker(url, 2, 0.05)
    trials = study.get_trials()
    assert trials[orphan.number].state == optuna.trial.TrialState.FAIL
    assert [t.state for t in counted_trials(trials)].count(optuna.trial.TrialState.COMPLETE) == 2


def _register(uri: str, template: str) -> None:
    from experiments import tracking

    # MLflow's set_experiment exports MLFLOW_EXPERIMENT_ID; an earlier test's id means nothing in this new store
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)

    tracking.open_store(uri)
    tracking.register_prompt("selfx-race", template, message="race", tags={})


def test_workers_registering_the_same_prompt_at_once_share_one_version(tmp_path):
    """Each trial registers its prompt; workers starting alike register the same new prompt in the same instant."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    from experiments import tracking

    tracking.open_store(uri)  # the schema first, as `selfx optimize` creates it before its workers start
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_register, args=(uri, "Review: {{review}}")) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    client = mlflow.MlflowClient(tracking_uri=uri)
    versions = list(client.search_prompt_versions("selfx-race"))
    # all succeeded with the one template (two versions of it can appear: MLflow creates a prompt and its first
    # version in two transactions, so a worker can find the prompt before its version and add one)
    assert versions and len({v.template for v in versions}) == 1


def test_a_resumed_study_does_not_propose_its_first_variants_again():
    """A process resuming a study after n trials samples from a fresh stream; the same seed again would repeat the
    first generation's variants (cached, so free, but each one a spent trial)."""
    from experiments.config import ExperimentConfig
    from experiments.optimize.search import _sampler, population_size

    config = ExperimentConfig.model_validate({"name": "s", "search": {"trials": 16, "space": {
        "program": ["PE", "EP", "PE-topk"], "format": ["numeric", "polarity"], "demos": [0, 8, 16],
        "decision": ["generated", "batch"], "optimizer": ["none", "bootstrap", "mipro", "gepa"]}}})
    assert population_size(config) == 4  # four generations in a 16-trial budget

    def proposals(study: optuna.Study, n: int) -> list[dict]:
        study.optimize(lambda t: (len([t.suggest_categorical(d, o) for d, o in config.search.space.items()]), 0.0),
                       n_trials=n)
        return [t.params for t in study.trials[-n:]]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=_sampler(config))
    first = proposals(study, 2)  # half of the first generation (random), then a resumption
    study.sampler = _sampler(config, resumed_after=len(study.trials))  # what a resuming process does
    assert proposals(study, 2) != first
    fresh = optuna.create_study(directions=["maximize", "maximize"], sampler=_sampler(config))
    assert proposals(fresh, 2) == first  # a fresh study is as reproducible as before


def test_an_optimiser_answer_that_cannot_be_parsed_fails_its_trial_not_the_study(tmp_path):
    """MIPROv2 on a 270M model may propose an instruction its adapter cannot parse: that trial fails (its reason
    recorded by the objective), and the budget's other trials still run."""
    import dspy
    from dspy.utils.exceptions import AdapterParseError

    from experiments.optimize.search import TRIAL_FAILURES

    url, study = _study(tmp_path)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise AdapterParseError(adapter_name="LeanAdapter", signature=dspy.Signature("question -> answer"),
                                    lm_response='{"answer": "m.m.', message="Unterminated string")
        return x

    work(study, objective, 3, storage=url, poll_seconds=0.1, catch=TRIAL_FAILURES)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]


def test_a_trial_proposing_a_measured_variant_is_pruned_and_not_counted(tmp_path):
    from experiments.optimize.search import skip_if_measured

    url, study = _study(tmp_path)

    from experiments.config import Variant
    from experiments.optimize.search import distinct_variants

    space = {"program": ["PE", "EP-topk", "PE-topk"], "format": ["numeric", "polarity"]}
    assert distinct_variants(space) == 4  # a top-k program has no format: P-E in two, each top-k once

    def objective(trial: optuna.Trial) -> float:
        variant = Variant(**{dim: trial.suggest_categorical(dim, options) for dim, options in space.items()})
        trial.set_user_attr("variant", variant.model_dump())
        skip_if_measured(trial, variant)
        return 1.0

    for program, format in (("PE", "numeric"), ("PE-topk", "numeric"), ("PE-topk", "polarity")):
        study.enqueue_trial({"program": program, "format": format})
    work(study, objective, 3, storage=url, poll_seconds=0.1)  # the third (the same program) does not count
    states = [t.state.name for t in study.trials]
    assert states[:3] == ["COMPLETE", "COMPLETE", "PRUNED"] and study.trials[2].user_attrs["duplicate_of"] == 1
    assert len(counted_trials(study.trials)) == 3 and len(study.trials) >= 4
