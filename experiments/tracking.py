"""The one module that talks to MLflow: a SQLite store inside ``mlruns/`` by default.

MLflow 3's plain file store is in maintenance mode (it raises), so the default tracking URI is
``sqlite:///mlruns/mlflow.db`` with run artifacts under ``mlruns/``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

DEFAULT_DIR = Path("mlruns")


def tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: the given one, ``$MLFLOW_TRACKING_URI``, or the project's SQLite store."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    DEFAULT_DIR.mkdir(exist_ok=True)
    return f"sqlite:///{DEFAULT_DIR}/mlflow.db"


def use_experiment(uri: str | None, experiment: str) -> Any:
    """Point MLflow at the store and experiment (created with artifacts beside a SQLite store); returns mlflow."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import mlflow

    resolved = tracking_uri(uri)
    mlflow.set_tracking_uri(resolved)
    if mlflow.get_experiment_by_name(experiment) is None and resolved.startswith("sqlite:///"):
        # artifacts beside the database, not in the working directory's default location
        root = Path(resolved.removeprefix("sqlite:///")).parent.resolve()
        mlflow.create_experiment(experiment, artifact_location=(root / experiment).as_uri())
    mlflow.set_experiment(experiment)
    # A model loaded earlier in this process (another run, even another store) stays "active" and
    # MLflow would attach the metrics we log to it: clear it so metrics belong to their run only.
    mlflow.clear_active_model()
    return mlflow


def metric_key(name: str) -> str:
    """MLflow keys allow letters, digits and _-./ and spaces; map anything else to '_'."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def log_run(experiment: str, run_name: str, *, params: dict[str, Any], metrics: dict[str, float | None],
            artifacts: Iterable[Path] = (), tags: dict[str, str] | None = None, uri: str | None = None) -> str:
    """One run with params, finite metrics and artifact files; returns its run id."""
    mlflow = use_experiment(uri, experiment)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        finite = {metric_key(k): float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if finite:
            mlflow.log_metrics(finite)
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id
