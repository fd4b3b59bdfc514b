"""Several workers, one optimisation, with the engines that exist for it.

Optuna's RDB storage shares the trials (SQLite on one machine, PostgreSQL across machines): each worker asks it
for the next trial until the budget is used. A running trial writes heartbeats; a trial whose worker was killed
goes silent, Optuna marks it failed and ``RetryHeartbeatStaleTrialCallback`` queues the same variant again, so the study
still ends with ``search.trials`` trials that count. One lock in the same database (a PostgreSQL advisory lock,
or a file lock beside a SQLite file) lets exactly one worker create the MLflow parent run and exactly one run the
held-out comparison; the lock is a session's, so it dies with a killed process and never leaves others waiting.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa

from programs.types import InputError

PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attribute naming its one MLflow parent run
FINISHED_ATTR = "finished_at"  # when the held-out comparison was logged (local ISO time, as Optuna's own)
HELD_OUT_ATTR = "held_out_run_digest"  # set once the held-out comparison of this many trials is logged
DUPLICATE_ATTR = "duplicate_of"  # a trial's: it proposed a variant already measured (pruned, not counted)


def open_storage(url: str, heartbeat_seconds: int) -> Any:
    """Optuna's RDB storage with heartbeats and one retry of a killed worker's trial."""
    # heartbeats, fail_stale_trials and the retry callback are "experimental" in Optuna 5: say it once, here
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    elif not url.startswith(("sqlite:", "postgresql")):
        raise InputError(f"--storage {url.split('://')[0]}://...: use sqlite:///path/optuna.db (one machine) or "
                         "postgresql+psycopg://user@host:port/db (several machines)")
    return _Storage(url, heartbeat_interval=heartbeat_seconds, grace_period=2 * heartbeat_seconds,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                    engine_kwargs={"pool_pre_ping": True})


class _Storage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, whose stale trials also include one killed before its first heartbeat: Optuna skips a
    RUNNING trial without a heartbeat, so a worker killed between asking for a trial and its heartbeat thread's
    first beat would leave that trial RUNNING for ever."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        # datetime_start is the asking process's local clock: twice the grace period allows for skew
        cutoff = datetime.now() - timedelta(seconds=2 * (self.grace_period or 2 * self.heartbeat_interval))
        with self.engine.connect() as connection:
            silent = connection.execute(sa.text(
                "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
                "WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL "
                "AND t.datetime_start < :cutoff"), {"study": study_id, "cutoff": cutoff})
            return stale + [row[0] for row in silent if row[0] not in stale]


@contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """An exclusive lock named ``name`` among every process using the storage at ``url``."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///") + f".{_digest(name)}.lock")
        with path.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes or the process dies
            yield
        return
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def counted_trials(trials: Sequence[Any]) -> list[Any]:
    """The trials that use the budget: every trial except a failed one that was queued again (its retry counts) and
    one that proposed an already measured variant (the budget buys distinct variants)."""
    retried = {n for t in trials for n in (optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t) or [])}
    return [t for t in trials if t.number not in retried and DUPLICATE_ATTR not in t.user_attrs]


def work(study: Any, objective: Callable[[Any], tuple[float, ...]], budget: int, *, storage: str,
         poll_seconds: float, catch: tuple[type[Exception], ...] = (ValueError,)) -> None:
    """Run trials until ``budget`` trials count, then wait while other workers' trials run (a killed worker's trial
    goes stale and is queued again; this worker may be the one to run it). Counting and asking for a trial happen
    under the storage's lock, so workers never start more trials than the budget between them."""
    states = optuna.trial.TrialState
    while True:
        with ExitStack() as asking:
            asking.enter_context(storage_lock(storage, f"{study.study_name}:ask"))
            optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            if any(t.state == states.WAITING for t in trials) or len(counted_trials(trials)) < budget:

                def asked(trial: Any) -> tuple[float, ...]:
                    asking.close()  # the trial is in the storage, RUNNING: the others may count it now
                    return objective(trial)

                study.optimize(asked, n_trials=1, catch=catch)
                continue
        if not any(t.state == states.RUNNING for t in trials):
            return
        time.sleep(poll_seconds)


def worker_threads(workers: int) -> int:
    """llama.cpp threads per worker process for an embedded model: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 2) // workers)
