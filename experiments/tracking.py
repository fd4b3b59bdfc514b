"""The one module that talks to MLflow: a SQLite store inside ``mlruns/`` by default.

MLflow 3's plain file store is in maintenance mode (it raises), so the default tracking URI is
``sqlite:///mlruns/mlflow.db`` with run artifacts under ``mlruns/``. Everything else in selfx hands this
module plain dicts, files and programs; nothing else imports mlflow. MLflow records the source commit of a
run itself (``mlflow.source.git.commit``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from programs.types import InputError, first_line

DEFAULT_DIR = Path("mlruns")
VARIANT_TAG = "selfx.variant"
NOTE_TAG = "mlflow.note.content"  # the run's Description in the MLflow UI
DIGEST_TAG = "selfx.config_digest"


def _mlflow() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: skip a cost-map download
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small file is noise
    import mlflow

    # "Creating initial MLflow database tables..." on every new store is noise between our own lines
    # ... and so is "Active model is cleared" each time a command points MLflow at its experiment
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # our tables' integer columns (labels, counts) never hold missing values: MLflow's hint is noise here
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
    # a data file path is registered twice as a local source; MLflow picks the local-artifact one, which is right
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways",
                            category=UserWarning)

    return mlflow


def tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: the given one, ``$MLFLOW_TRACKING_URI``, or the project's SQLite store."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    DEFAULT_DIR.mkdir(exist_ok=True)
    return f"sqlite:///{DEFAULT_DIR}/mlflow.db"


class RunNotFound(InputError):
    """No run to export, or a run without what an export needs."""


class TrackingStoreError(InputError):
    """The tracking store cannot be opened or written."""


def open_store(uri: str | None = None) -> Any:
    """Point MLflow at the store and check that it opens, before any work is done; a client for it."""
    mlflow = _mlflow()
    resolved = tracking_uri(uri)
    fix = "pass --tracking-uri sqlite:///<a writable folder>/mlflow.db"
    if resolved.startswith("sqlite:///"):
        folder = Path(resolved.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingStoreError(f"tracking store {resolved}: cannot create {folder} ({exc.strerror}); "
                                     f"{fix}") from exc
        if not os.access(folder, os.W_OK):
            raise TrackingStoreError(f"tracking store {resolved}: {folder} is not writable; {fix}")
    mlflow.set_tracking_uri(resolved)
    try:
        client = mlflow.MlflowClient()
        client.search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises SQLAlchemy, REST and its own errors here
        raise TrackingStoreError(f"tracking store {resolved} cannot be opened ({type(exc).__name__}: "
                                 f"{first_line(exc, 200)}); "
                                 f"{fix}, or move a corrupt database aside") from exc
    return client


def get_run(client: Any, run_id: str, uri: str | None = None) -> Any:
    """A run by id, or RunNotFound naming it."""
    try:
        return client.get_run(run_id)
    except Exception as exc:  # MlflowException(RESOURCE_DOES_NOT_EXIST) or a malformed id
        raise RunNotFound(f"no MLflow run {run_id!r} in {tracking_uri(uri)}: copy a run id from `selfx ui`, "
                          "or pass --experiment NAME") from exc


def use_experiment(uri: str | None, experiment: str) -> str:
    """Point MLflow at the store and experiment (created with artifacts beside a SQLite store); its id."""
    mlflow = _mlflow()
    open_store(uri)
    resolved = tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None and resolved.startswith("sqlite:///"):
        # artifacts beside the database, not in the working directory's default location
        root = Path(resolved.removeprefix("sqlite:///")).parent.resolve()
        mlflow.create_experiment(experiment, artifact_location=(root / experiment).as_uri())
    found = mlflow.set_experiment(experiment)
    # A model loaded earlier in this process (another run, even another store) stays "active" and
    # MLflow would attach the metrics we log to it: clear it so metrics belong to their run only.
    mlflow.clear_active_model()
    return found.experiment_id


def metric_key(name: str) -> str:
    """MLflow keys allow letters, digits and _-./ and spaces; map anything else to '_'."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The loggable part of a metrics dict: finite numbers under valid keys (None and NaN are not logged)."""
    return {metric_key(k): float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def flatten_tables(report: Mapping[str, Any], tables: Iterable[str] = ("faithfulness", "agreement")) -> dict[str, Any]:
    """A study-shaped report as ``table/configuration/metric`` keys."""
    return {f"{table}/{config}/{metric}": value for table in tables for config, row in report[table].items()
            for metric, value in row.items()}


def log_run(experiment: str, run_name: str, *, params: Mapping[str, Any], metrics: Mapping[str, Any],
            artifacts: Iterable[Path] = (), tags: Mapping[str, str] | None = None, uri: str | None = None) -> str:
    """One run with params, finite metrics and artifact files; returns its run id."""
    mlflow = _mlflow()
    use_experiment(uri, experiment)
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {})) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_metrics(finite_metrics(metrics))
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id


@dataclass
class ParentRun:
    """The parent run of an experiment; ``finished`` maps variant names to their finished nested runs' metrics
    when an interrupted run was resumed."""

    run_id: str
    resumed: bool = False
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)

    def log_params(self, params: Mapping[str, Any]) -> None:
        _mlflow().MlflowClient().log_batch(self.run_id, params=[_param(k, v) for k, v in params.items()])

    def log_dict(self, payload: Any, path: str) -> None:
        _mlflow().MlflowClient().log_dict(self.run_id, payload, path)

    def log_file(self, path: Path, folder: str | None = None) -> None:
        _mlflow().MlflowClient().log_artifact(self.run_id, str(path), folder)

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        client = _mlflow().MlflowClient()
        for key, value in finite_metrics(metrics).items():
            client.log_metric(self.run_id, key, value)

    def describe(self, text: str) -> None:
        _mlflow().MlflowClient().set_tag(self.run_id, NOTE_TAG, text)

    def log_inputs(self, datasets: Mapping[str, Dataset]) -> None:
        from mlflow.entities import DatasetInput, InputTag

        inputs = []
        for split, dataset in datasets.items():
            entity = dataset.as_mlflow()._to_mlflow_entity()
            inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", split)]))
        _mlflow().MlflowClient().log_inputs(self.run_id, datasets=inputs)


def _param(key: str, value: Any) -> Any:
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])


@contextmanager
def parent_run(experiment: str, name: str, *, digest: str | None = None, resume: bool = False,
               uri: str | None = None) -> Iterator[ParentRun]:
    """Open the parent run of an experiment. With ``resume``, the newest unfinished parent run with the same
    config ``digest`` is reopened and its finished variants reported; otherwise a new one starts."""
    mlflow = _mlflow()
    experiment_id = use_experiment(uri, experiment)
    previous = _interrupted_parent(experiment_id, digest) if resume and digest else None
    if previous is not None:
        parent = ParentRun(previous.info.run_id, resumed=True, finished=_finished_variants(previous))
        _fail_unfinished_children(previous)
        opened = mlflow.start_run(run_id=previous.info.run_id)
    else:
        opened = mlflow.start_run(run_name=name, tags={DIGEST_TAG: digest} if digest else None)
        parent = ParentRun(opened.info.run_id)
    with opened:
        yield parent


def shared_parent(experiment: str, name: str, *, digest: str, run_id: str | None = None,
                  uri: str | None = None) -> ParentRun:
    """The one parent run of a study that several worker processes share: ``run_id`` (found by the caller in the
    study it belongs to) reopened, or a new run. It is never a process's active run: workers log their nested runs
    to it by id, and ``end_parent`` closes it once the study is complete."""
    mlflow = _mlflow()
    experiment_id = use_experiment(uri, experiment)
    client = mlflow.MlflowClient()
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception:  # deleted from the store since: start a new parent
            run = None
        if run is not None and run.info.lifecycle_stage == "active":
            if run.info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            return ParentRun(run_id, resumed=True)
    from mlflow.tracking.context.registry import resolve_tags

    # the tags MLflow's own start_run records (source, commit, user), and the config digest
    created = client.create_run(experiment_id, run_name=name, tags=resolve_tags({DIGEST_TAG: digest}))
    return ParentRun(created.info.run_id)


def end_parent(parent: ParentRun) -> None:
    """Close a shared parent run: a child left running by a killed worker is marked failed, the parent finished."""
    client = _mlflow().MlflowClient()
    _fail_unfinished_children(client.get_run(parent.run_id))
    client.set_terminated(parent.run_id, status="FINISHED")


def load_dict(run_id: str, path: str) -> Any:
    """A JSON artifact of a run."""
    return _mlflow().artifacts.load_dict(f"runs:/{run_id}/{path}")


def _interrupted_parent(experiment_id: str, digest: str) -> Any | None:
    """The newest parent run of this config that did not finish (killed, failed or still marked running)."""
    found = _mlflow().MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.`{DIGEST_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found and found[0].info.status != "FINISHED" else None


def _fail_unfinished_children(parent: Any) -> None:
    """A killed process leaves its last child run RUNNING: mark it FAILED so the resumed parent shows each
    variant once as finished (its re-run is a new child)."""
    client = _mlflow().MlflowClient()
    for run in client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status="FAILED")
            client.set_tag(run.info.run_id, NOTE_TAG, "Interrupted (the process was killed); the resumed parent "
                                                      "ran this variant again.")


def _finished_variants(parent: Any) -> dict[str, dict[str, Any]]:
    children = _mlflow().MlflowClient().search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {run.data.tags.get(VARIANT_TAG): {"run_id": run.info.run_id, "metrics": run.data.metrics}
            for run in children if run.info.status == "FINISHED"}


@dataclass(frozen=True)
class Dataset:
    """What a run evaluated, as MLflow shows it in the runs table: a name, a split and the records."""

    name: str
    split: str
    records: list[dict[str, Any]]
    source: str = ""

    def as_mlflow(self) -> Any:
        import pandas as pd

        frame = pd.DataFrame(self.records)
        return _mlflow().data.from_pandas(frame, source=self.source or self.name, name=f"{self.name} ({self.split})",
                                          targets="label" if "label" in frame else None)


def log_variant(parent_run_id: str, name: str, *, params: Mapping[str, Any], metrics: Mapping[str, Any],
                tags: Mapping[str, str], prompt: str, program: Any, rows: list[dict[str, Any]],
                context: Any, description: str = "", datasets: Mapping[str, Dataset] | None = None,
                prompt_template: Any = None, prompt_name: str = "", explanations: Any = None) -> str:
    """One nested run per variant: params, metrics, a description, its datasets as inputs, the rendered prompt
    (registered in the prompt registry and linked to the run when a template is given), ``program.json``, a
    per-example table, the per-sentence explanations the report draws, and the program as an ``mlflow.dspy``
    model. ``context``: the ``dspy.context`` the model is logged under (its LM and adapter). An explicit parent
    id, so it is safe from any thread."""
    mlflow = _mlflow()
    with mlflow.start_run(run_name=name, nested=True, parent_run_id=parent_run_id) as run:
        mlflow.set_tags({VARIANT_TAG: name, **tags, **({NOTE_TAG: description} if description else {})})
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_metrics(finite_metrics(metrics))
        for split, dataset in (datasets or {}).items():
            mlflow.log_input(dataset.as_mlflow(), context=split)
        mlflow.log_text(prompt, "prompts/predict.txt")
        if prompt_template is not None and prompt_name:
            uri = register_prompt(prompt_name, prompt_template, message=f"variant {name}",
                                  tags={"variant": name, "source_run": run.info.run_id})
            mlflow.MlflowClient().link_prompt_version_to_run(run.info.run_id, uri)
        if explanations is not None:
            mlflow.log_dict(explanations, "explanations.json")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "program.json"
            program.save(str(path), save_program=False)
            mlflow.log_artifact(str(path))
        if rows:
            mlflow.log_table({k: [row[k] for row in rows] for k in rows[0]}, artifact_file="examples.json")
        with context:
            mlflow.dspy.log_model(program, name="program", input_example={"review": rows[0]["review"]}
                                  if rows else None)
        return run.info.run_id


def download_program(run_id: str, folder: Path) -> Path:
    """The ``program.json`` a variant run saved, downloaded into ``folder``."""
    return Path(_mlflow().artifacts.download_artifacts(run_id=run_id, artifact_path="program.json",
                                                       dst_path=str(folder)))


def find_variant_run(experiment: str, *, metric: str = "accuracy", run_id: str | None = None,
                     uri: str | None = None) -> Any:
    """A variant run: the given one, or the nested variant run with the highest ``metric``."""
    client = open_store(uri)
    if run_id:
        return get_run(client, run_id, uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise RunNotFound(f"no MLflow experiment {experiment!r}; run `selfx run` first or pass --experiment")
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{VARIANT_TAG}` != ''",
                              order_by=[f"metrics.`{metric}` DESC"], max_results=50)
    runs = [r for r in runs if metric in r.data.metrics]
    if not runs:
        raise RunNotFound(f"no variant run in {experiment!r} has the metric {metric!r}")
    return runs[0]


def register_prompt(name: str, template: Any, *, message: str, tags: Mapping[str, str]) -> str:
    """Register a chat template in MLflow's prompt registry (a new version only when the template changed); its
    ``prompts:/name/version`` URI. Several workers may register the same prompt at once: the one that loses the
    race looks again."""
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    lost = 0
    while True:
        try:
            latest = mlflow.genai.load_prompt(f"prompts:/{name}@latest")
        except Exception:  # no such prompt yet: MLflow raises its own not-found errors
            latest = None
        if latest is not None and latest.template == template:
            return f"prompts:/{name}/{latest.version}"
        try:
            version = mlflow.genai.register_prompt(name=name, template=template, commit_message=message,
                                                   tags=dict(tags))
            return f"prompts:/{name}/{version.version}"
        except MlflowException:  # "already exists": another worker created it (or its version) a moment ago
            lost += 1
            if lost == 3:
                raise


def run_data(run_id: str, uri: str | None = None) -> dict[str, Any]:
    """A run as plain data: info, params, metrics, tags, its nested runs, and its JSON and text artifacts."""
    client = open_store(uri)
    run = get_run(client, run_id, uri)
    children = client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
                                  order_by=["attributes.start_time ASC"], max_results=1000)
    return {**_plain(run, client), "children": [_plain(child, client) for child in children]}


def experiment_runs(experiment: str, uri: str | None = None) -> list[str]:
    """The top-level runs of an experiment, newest first."""
    client = open_store(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise RunNotFound(f"no MLflow experiment {experiment!r}; see the names with `selfx ui`")
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000)
    return [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags]


def _plain(run: Any, client: Any) -> dict[str, Any]:
    import json as _json

    artifacts: dict[str, Any] = {}
    for item in client.list_artifacts(run.info.run_id) + client.list_artifacts(run.info.run_id, "prompts"):
        if item.is_dir or not item.path.endswith((".json", ".txt")) or item.file_size and item.file_size > 20_000_000:
            continue
        with tempfile.TemporaryDirectory() as folder:
            text = Path(client.download_artifacts(run.info.run_id, item.path, folder)).read_text(encoding="utf-8")
        artifacts[item.path] = _json.loads(text) if item.path.endswith(".json") else text
    return {"run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
            "experiment_id": run.info.experiment_id, "params": dict(run.data.params),
            "metrics": dict(run.data.metrics), "tags": dict(run.data.tags), "artifacts": artifacts}


def log_report(run_id: str, path: Path) -> None:
    """The HTML report as an artifact of its run (MLflow's artifact view renders HTML)."""
    _mlflow().MlflowClient().log_artifact(run_id, str(path))


def ui_command(uri: str | None, port: int) -> list[str]:
    """The command line of MLflow's UI on a store (one worker: two cores)."""
    import sys

    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(uri), "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]
