"""One optimisation across three worker processes, on real services: Debian's PostgreSQL (Optuna's storage, the
probe cache and the MLflow server's backend), ``mlflow server`` on 127.0.0.1, and llama.cpp's OpenAI-compatible
server with an embedded model. One worker is SIGKILLed inside a trial; the study still completes.

The served model is SmolLM2-135M: llama-cpp-python's server answers a request with log-probabilities by sorting
the whole vocabulary in Python for every generated token, and over the API the probe decodes the program per text,
so with Gemma-3-270M's 262k-token vocabulary (SmolLM2: 49k) one probe answer took about 10 s and this test over
10 minutes. Set SELFX_SCALE_OUT_MODEL=gemma3-270m to run it on the embedded default.

Everything asserted is read back from PostgreSQL and from the tracking server, never from selfx's own output.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import require_shared
from tests.services import mlflow_server, postgres

pytestmark = [pytest.mark.model, pytest.mark.server]

TRIALS = 4
MODEL = os.environ.get("SELFX_SCALE_OUT_MODEL", "smollm2-135m")
CONFIG = """
name: scaleout
lm: openai/{model}
api_base: {api_base}
concurrency: 1  # three workers, one request each in flight: the server answers one at a time
data: {{source: sst2, train_n: 4, dev_n: 2, test_n: 1}}
measure: {{mode: corrected, probe: logprob, protocol: bins, faithfulness_n: 1, explainers: [random]}}
search:
  trials: {trials}
  heartbeat_seconds: 2
  objectives: [accuracy, comprehensiveness_bins]
  space:
    program: [P, PE-topk]
    demos: [0]
    decision: [generated]
    value_mode: [sample]
    optimizer: [none]
"""


def rows(db, sql: str, **params) -> list[tuple]:
    import sqlalchemy as sa

    with db.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql), params)]


def test_three_workers_share_one_study_and_survive_a_killed_worker(tmp_path):
    require_shared("sst2", "validation.jsonl")
    import json

    import mlflow
    import sqlalchemy as sa

    from experiments.servers import llama_server

    (tmp_path / "artifacts").mkdir()
    with postgres(("optuna", "tracking")) as pg, \
            mlflow_server(f"{pg}/tracking", tmp_path / "artifacts") as tracking_uri, \
            llama_server(MODEL, log=tmp_path / "llama-server.log") as api_base:
        (tmp_path / "c.yaml").write_text(CONFIG.format(model=MODEL, api_base=api_base, trials=TRIALS))
        env = {**os.environ, "DSPY_CACHEDIR": str(tmp_path / "dspy-cache")}
        main = subprocess.Popen([sys.executable, "-m", "experiments.cli", "--quiet", "optimize", "c.yaml",
                                 "--storage", f"{pg}/optuna", "--workers", "3", "--tracking-uri", tracking_uri,
                                 "--json", "result.json"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        db = sa.create_engine(f"{pg}/optuna")
        running = """SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a
                     ON a.trial_id = t.trial_id AND a.key = 'worker' WHERE t.state = 'RUNNING'"""
        deadline, victim = time.time() + 600, None
        while victim is None:
            assert main.poll() is None, f"finished before a worker could be killed: {main.stderr.read()[-3000:]}"
            assert time.time() < deadline
            found = rows(db, running) if sa.inspect(db).has_table("trials") else []
            if found:
                victim = found[0]
            else:
                time.sleep(0.2)
        killed_trial, worker = victim[0], json.loads(victim[1])
        pid = int(worker.rsplit(":", 1)[1])
        assert pid != main.pid  # a worker process, not the coordinating command
        os.kill(pid, signal.SIGKILL)
        out, err = main.communicate(timeout=1200)
        assert main.returncode == 0, err[-4000:]

        # Optuna's view, from PostgreSQL: the budget ran once each, the killed trial failed and was run again
        states = dict(rows(db, "SELECT number, state FROM trials"))
        assert states[killed_trial] == "FAIL"
        assert sorted(states.values()).count("COMPLETE") == TRIALS and len(states) == TRIALS + 1
        retried = rows(db, "SELECT value_json FROM trial_system_attributes WHERE key = 'failed_trial'")
        assert [json.loads(v) for (v,) in retried] == [killed_trial]
        workers = {json.loads(v) for (v,) in rows(db, "SELECT value_json FROM trial_user_attributes "
                                                      "WHERE key = 'worker'")}
        assert len(workers) >= 2, workers  # the trials were shared, not run by one process
        run_ids = [json.loads(v) for (v,) in rows(db, """SELECT a.value_json FROM trial_user_attributes a
            JOIN trials t ON t.trial_id = a.trial_id WHERE a.key = 'run_id' AND t.state = 'COMPLETE'""")]
        assert len(run_ids) == TRIALS == len(set(run_ids))
        parent_attr = rows(db, "SELECT value_json FROM study_user_attributes WHERE key = 'mlflow_parent_run_id'")
        assert len(parent_attr) == 1

        # the probe cache is a table of the same database: written by the workers, one row per key
        total, distinct = rows(db, "SELECT count(*), count(DISTINCT key) FROM answers")[0]
        assert total > 0 and total == distinct

        # the tracking server's view: one parent, every trial once as its nested run, nothing left running
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name("selfx-scaleout-optimize")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1 and parents[0].info.run_id == json.loads(parent_attr[0][0])
        assert parents[0].info.status == "FINISHED"
        parent_id = parents[0].info.run_id
        assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in runs if r is not parents[0])
        trial_runs = [r for r in runs if "trial" in r.data.metrics and r.info.status == "FINISHED"]
        assert sorted(int(r.data.metrics["trial"]) for r in trial_runs) == sorted(
            n for n, s in states.items() if s == "COMPLETE")
        assert {r.info.run_id for r in trial_runs} == set(run_ids)
        assert not [r for r in runs if r.info.status == "RUNNING"]
        assert any(r.info.run_name.startswith("held-out") for r in runs)  # the held-out comparison ran once
        assert len([r for r in runs if r.info.run_name == "held-out paper"]) == 1
        assert "worker process" in out and str(killed_trial) in out

        # the other commands read the same tracking server
        def selfx(*command: str) -> str:
            done = subprocess.run([sys.executable, "-m", "experiments.cli", "--quiet", *command, "--tracking-uri",
                                   tracking_uri], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-2000:]
            return done.stdout

        assert selfx("ui").startswith(tracking_uri)  # the server's own UI
        selfx("export", "--experiment", "selfx-scaleout-optimize", "--out", "exported")
        assert (tmp_path / "exported" / "program.json").is_file()
