"""Two worker processes against one on this machine, for a probe-bound optimisation (workers.yaml).

Each run starts from empty stores (Optuna, MLflow, probe cache, DSPy cache) in a temporary folder. Samplers of
several workers draw their own streams, so the two runs' variants differ; the comparison is therefore a rate:
distinct probe texts answered (rows of the fresh probe cache) per second of the trial phase (first trial start to
last trial end, from Optuna's storage), beside trials per second. Prints one JSON object.

    python docs/measurements/workers_speedup.py > docs/measurements/scaleout_workers.json
"""

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

CONFIG = Path(__file__).with_name("workers.yaml").resolve()


def run(workers: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"selfx-workers{workers}-"))
    env = {**os.environ, "DSPY_CACHEDIR": str(folder / "dspy-cache")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.cli", "--quiet", "optimize", str(CONFIG), "--workers",
                    str(workers), "--storage", f"sqlite:///{folder}/optuna.db", "--probe-cache",
                    str(folder / "probe.sqlite"), "--tracking-uri", f"sqlite:///{folder}/mlflow.db"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    with sqlite3.connect(folder / "optuna.db") as db:
        spans = db.execute("SELECT datetime_start, datetime_complete FROM trials WHERE state = 'COMPLETE'").fetchall()
    with sqlite3.connect(folder / "probe.sqlite") as db:
        texts = db.execute("SELECT count(*) FROM answers").fetchone()[0]
    start = min(datetime.fromisoformat(s) for s, _ in spans)
    end = max(datetime.fromisoformat(e) for _, e in spans)
    seconds = (end - start).total_seconds()
    return {"workers": workers, "trials": len(spans), "trial_phase_seconds": round(seconds, 1),
            "wall_seconds": round(wall, 1), "probe_texts": texts,
            "probe_texts_per_second": round(texts / seconds, 2), "trials_per_minute": round(60 * len(spans) / seconds, 2)}


if __name__ == "__main__":
    one, two = run(1), run(2)
    print(json.dumps({"model": "gemma3-270m", "cores": os.cpu_count(), "one_worker": one, "two_workers": two,
                      "speedup_probe_texts_per_second": round(two["probe_texts_per_second"] / one["probe_texts_per_second"], 2),
                      "speedup_trials_per_minute": round(two["trials_per_minute"] / one["trials_per_minute"], 2)},
                     indent=2))
