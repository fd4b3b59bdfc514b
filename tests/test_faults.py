"""A study against an API that fails: rate limits, server errors, hangs, truncated and schema-violating answers.

A real llama.cpp server (SmolLM2) sits behind a fault-injecting one (tests/fault_server.py). Transport
faults are retried by the client within its budget (3 retries, Retry-After honoured, a timeout set by
$SELFX_API_TIMEOUT); answers that arrive broken are counted failures, never default labels; the study
completes and its summary and MLflow run show the counts.
"""

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from experiments.servers import llama_server
from tests.fault_server import fault_server

pytestmark = [pytest.mark.server, pytest.mark.model]

SCRIPT = ["429", "ok", "500", "ok", "hang", "ok", "truncated", "ok", "schema", "429", "500"]


def study(base: str, folder, data) -> tuple[subprocess.CompletedProcess, dict]:
    """``selfx study`` as a user runs it, with fresh caches (DSPy's and the probe's) in ``folder``."""
    folder.mkdir()
    env = {**os.environ, "SELFX_API_TIMEOUT": "20", "DSPY_CACHEDIR": str(folder / "dspy-cache")}
    done = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "--quiet", "study", "--lm", "smollm2-135m", "--api-base", base,
         "--data", str(data), "--n", "1", "--lime-samples", "1", "--concurrency", "1",
         "--cache", str(folder / "probe.sqlite"), "--json", str(folder / "study.json"), "--out", str(folder / "out"),
         "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"],
        capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads((folder / "study.json").read_text())


def failures(report: dict) -> int:
    return sum(report["program_failures"].values()) + sum(s["failures"] for s in report["probe_stats"].values())


def test_a_study_completes_through_faults_and_counts_them(tmp_path):
    data = tmp_path / "reviews.jsonl"
    # one short review: over an API every perturbed text is a full generation
    data.write_text(json.dumps({"text": "a dull film", "label": 0}) + "\n")
    with llama_server("smollm2-135m", log=tmp_path / "server.log") as upstream:
        with fault_server(upstream, []) as (base, _):
            _, clean = study(base, tmp_path / "clean", data)
        with fault_server(upstream, SCRIPT, hang_seconds=45) as (base, faults):
            done, faulty = study(base, tmp_path / "faulty", data)
    # every scripted fault was served once
    assert faults.served - Counter({"ok": faults.served["ok"]}) == Counter(
        {k: v for k, v in Counter(SCRIPT).items() if k != "ok"})
    # the truncated and the schema-violating answer are two more counted failures than the clean run's own
    # (a 135M model's parse failures); rate limits, 500s and the hang were retried away
    assert failures(faulty) == failures(clean) + 2
    assert "failed answers (counted, excluded): programs" in done.stdout

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'faulty' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("selfx-study").experiment_id])
    logged = sum(v for k, v in run.data.metrics.items() if k.startswith("program_failures/") or
                 (k.startswith("probe/") and k.endswith("/failures")))
    assert logged == failures(faulty)
