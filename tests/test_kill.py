"""SIGKILL anywhere, then the same command again: nothing finished is asked again, the figures equal an
uninterrupted run's, no MLflow run is left duplicated or running, and Optuna marks the killed trial failed.

Each command runs as a user runs it (a subprocess of `selfx`, SmolLM2, fresh DSPy and probe caches per
test); the kill points are found by watching the files the process writes (the probe cache, the MLflow
and Optuna databases), never by hooks in the code.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import require_shared

pytestmark = pytest.mark.model


def selfx(args: list[str], folder: Path, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "DSPY_CACHEDIR": str(folder / "dspy-cache")}
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", "--quiet", *args], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(args: list[str], folder: Path) -> None:
    process = selfx(args, folder)
    out, err = process.communicate(timeout=900)
    assert process.returncode == 0, err[-3000:]


def kill_when(args: list[str], folder: Path, ready: Callable[[], bool], timeout: float = 900) -> None:
    """Start the command and SIGKILL it as soon as ``ready()`` holds (it must not finish first)."""
    process = selfx(args, folder)
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, f"finished before the kill point: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()


def count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return 0


def calls(report: dict) -> int:
    return sum(s["model_calls"] for s in report["probe_stats"].values())


def same_figures(a: dict, b: dict, tolerance: float = 1e-4) -> float:
    """The largest difference between two reports' tables (faithfulness and agreement), asserting the keys match."""
    worst = 0.0
    for table in ("faithfulness", "agreement"):
        assert a[table].keys() == b[table].keys()
        for row, values in a[table].items():
            assert values.keys() == b[table][row].keys()
            for key, value in values.items():
                other = b[table][row][key]
                assert (value is None) == (other is None), (row, key)
                if value is not None:
                    worst = max(worst, abs(value - other))
    assert worst <= tolerance
    return worst


@pytest.fixture
def reviews(tmp_path):
    require_shared("sst2", "validation.jsonl")
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (
        {"text": "a gorgeous , witty , seductive movie .", "label": 1},
        {"text": "the story is dull and far too long .", "label": 0})))
    return path


def test_study_killed_three_times_during_probes_resumes_without_asking_again(tmp_path, reviews):
    """Killed at 5 %, 30 % and 60 % of its probe answers, each time in a run that resumed the previous one's
    cache: the last run asks only what no killed run stored, and its figures equal an uninterrupted run's."""
    args = ["study", "--lm", "local:smollm2-135m", "--data", str(reviews), "--n", "2", "--lime-samples", "2",
            "--no-mlflow", "--out", "out", "--cache", "probe.sqlite", "--json", "study.json"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    reference.mkdir()
    resumed.mkdir()
    finish(args, reference)
    expected = json.loads((reference / "study.json").read_text())
    total = expected["cache_entries"]
    def answers() -> int:
        return count(resumed / "probe.sqlite", "SELECT COUNT(*) FROM answers")

    stored = 0
    for share in (0.05, 0.3, 0.6):
        target = max(stored + 1, share * total)
        kill_when(args, resumed, lambda target=target: answers() >= target)
        now = answers()
        assert stored < now < total and not (resumed / "study.json").exists()
        stored = now
    finish(args, resumed)
    again = json.loads((resumed / "study.json").read_text())
    assert calls(again) == calls(expected) - stored  # what the killed runs stored is reused, none re-asked
    same_figures(expected, again)


RUN = """
name: killable
lm: local:smollm2-135m
data: {source: sst2, train_n: 0, dev_n: 2, test_n: 3}
measure: {faithfulness_n: 2}
variants:
  - {program: P}
  - {program: PE-topk}
  - {program: P, demos: 2}
"""


def runs(db: Path, status: str) -> int:
    return count(db, "SELECT COUNT(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                     f"WHERE t.key = 'mlflow.parentRunId' AND r.status = '{status}'")


@pytest.mark.parametrize("point", ["after one variant", "during probes", "after two variants"])
def test_run_killed_between_and_inside_variants_resumes_each_variant_once(point, tmp_path):
    require_shared("sst2", "validation.jsonl")
    (tmp_path / "killable.yaml").write_text(RUN)
    db, cache = tmp_path / "mlruns" / "mlflow.db", tmp_path / ".selfx-cache" / "probe.sqlite"
    args = ["run", "killable.yaml", "--tracking-uri", f"sqlite:///{db}", "--json", "run.json"]
    ready = {"after one variant": lambda: runs(db, "FINISHED") >= 1,
             # P-E top-k (the second variant) is the one that asks the probe
             "during probes": lambda: count(cache, "SELECT COUNT(*) FROM answers") >= 1,
             "after two variants": lambda: runs(db, "FINISHED") >= 2}[point]
    kill_when(args, tmp_path, ready)
    kept = runs(db, "FINISHED")
    finish(args, tmp_path)
    result = json.loads((tmp_path / "run.json").read_text())
    assert [v.get("resumed", False) for v in result["variants"]].count(True) == kept  # finished ones not redone
    assert runs(db, "FINISHED") == 3 and runs(db, "RUNNING") == 0  # each variant once; a killed one FAILED
    parents = count(db, "SELECT COUNT(*) FROM runs r WHERE r.run_uuid NOT IN "
                        "(SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')")
    assert parents == 1 and count(db, "SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'") == 0


OPTIMIZE = """
name: killopt
lm: local:smollm2-135m
data: {source: sst2, train_n: 4, dev_n: 3, test_n: 3}
measure: {mode: corrected, probe: logprob, faithfulness_n: 2}
search:
  trials: 3
  heartbeat_seconds: 1
  objectives: [accuracy, comprehensiveness_bins]
  storage: sqlite:///STORE/optuna.db
  space:
    program: [PE-topk, P]
    demos: [0, 2]
    decision: [generated]
    optimizer: [none]
"""


# the middle kill point runs with `pytest -m slow`: the default run keeps the first and the last trial
@pytest.mark.parametrize("complete", [0, pytest.param(1, marks=pytest.mark.slow), 2])
def test_optimize_killed_inside_a_trial_resumes_with_that_trial_failed(complete, tmp_path):
    require_shared("sst2", "validation.jsonl")
    (tmp_path / "opt.yaml").write_text(OPTIMIZE.replace("STORE", str(tmp_path)))
    optuna_db, db = tmp_path / "optuna.db", tmp_path / "mlruns" / "mlflow.db"
    args = ["optimize", "opt.yaml", "--tracking-uri", f"sqlite:///{db}", "--json", "opt.json"]
    state = "SELECT COUNT(*) FROM trials WHERE state = '{}'"
    kill_when(args, tmp_path, lambda: count(optuna_db, state.format("COMPLETE")) >= complete
              and count(optuna_db, state.format("RUNNING")) == 1)
    time.sleep(3)  # the killed trial's heartbeat goes stale (grace period: 2 s)
    finish(args, tmp_path)
    assert count(optuna_db, state.format("FAIL")) == 1 and count(optuna_db, state.format("RUNNING")) == 0
    assert count(optuna_db, state.format("COMPLETE")) == 3  # the budget counts completed trials
    result = json.loads((tmp_path / "opt.json").read_text())
    assert len(result["failed"]) == 1 and result["trials"] == 4 + count(optuna_db, state.format("PRUNED"))  # + repeats
    parents = count(db, "SELECT COUNT(*) FROM runs r WHERE r.run_uuid NOT IN "
                        "(SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')")
    assert parents == 1 and count(db, "SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'") == 0
