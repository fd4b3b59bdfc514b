"""End to end: a tiny experiment on the embedded model, checked from the MLflow store itself."""

import json

import pytest

from experiments.config import load_config
from experiments.run import run_variants
from tests.conftest import require_shared
from tests.golden.figures import compare, load, tolerance

pytestmark = pytest.mark.model

def test_a_run_reproduces_its_pinned_metrics(tiny_run):
    _, figures, _ = tiny_run
    pinned = load("run_smollm2")
    assert compare(pinned, figures, tolerance=tolerance(pinned)) == []


def test_tiny_experiment_lands_in_mlflow(tiny_run):
    tmp_path, _, result = tiny_run
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("selfx-golden")
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    parent = [r for r in runs if r.info.run_id == result["parent_run_id"]][0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    by_program = {r.data.params["program"]: r for r in children}
    pe = by_program["PE"]
    assert pe.data.params["order"] == "P-E" and pe.data.params["metric_mode"] == "corrected"
    for key in ("accuracy", "accuracy_ci_low", "parse_failure_rate", "comprehensiveness_bins",
                "random_comprehensiveness_bins", "lm_calls", "wall_seconds", "seconds_per_example_median",
                "explanation_nondegenerate_rate", "explanation_range_violations", "spearman_vs_occlusion_n"):
        assert key in pe.data.metrics, key
    assert "batch" in by_program["P"].data.params["calibration"]
    files = {f.path for f in client.list_artifacts(pe.info.run_id)} | {
        f.path for f in client.list_artifacts(pe.info.run_id, "prompts")}
    assert {"program.json", "examples.json", "prompts/predict.txt"} <= files
    prompt = client.download_artifacts(pe.info.run_id, "prompts/predict.txt", str(tmp_path))
    assert "{review}" in open(prompt).read()
    models = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert any(m.source_run_id == pe.info.run_id for m in models)

    # export the best run by accuracy and load it back: same predictions as the run recorded
    import dspy

    from experiments.export import export_run
    from experiments.tracking import find_variant_run
    from programs.lean_adapter import LeanAdapter
    from programs.lm import make_lm
    from programs.self_explain import SentimentProgram

    run = find_variant_run("selfx-golden", metric="accuracy", run_id=pe.info.run_id, uri=uri)
    lm = make_lm("local:smollm2-135m", cache=False)
    exported = export_run(run, tmp_path / "export", lm)
    assert {"program.json", "prompt.md", "messages.json", "README.md"} <= set(exported["files"])
    loaded = mlflow.genai.load_prompt(exported["prompt"])
    assert loaded.tags.get("source_run") == pe.info.run_id
    program = SentimentProgram("PE", value_mode="expected")
    program.load(str(tmp_path / "export" / "program.json"))
    table = json.load(open(client.download_artifacts(pe.info.run_id, "examples.json", str(tmp_path))))
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [row["comprehensiveness_bins"] is not None for row in rows] == [True, True, False]  # faithfulness_n 2
    with dspy.context(lm=lm, adapter=LeanAdapter()):
        again = [program(review=row["review"]).label for row in rows]
    assert again == [row["prediction"] for row in rows]
    model = mlflow.dspy.load_model([m for m in models if m.source_run_id == pe.info.run_id][0].model_uri)
    with dspy.context(lm=lm, adapter=LeanAdapter()):
        assert model(review=rows[0]["review"]).label == rows[0]["prediction"]


RESUMABLE = """
name: resumable
lm: local:smollm2-135m
data: {source: sst2, train_n: 0, dev_n: 0, test_n: 2}
variants:
  - {program: P}
  - {program: P, demos: 2}
"""


def _tracked_config(tmp_path, monkeypatch, name, text):
    """A config written to ``tmp_path`` (the working directory) and an MLflow store there."""
    require_shared("sst2", "validation.jsonl")
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{name}.yaml").write_text(text)
    (tmp_path / "mlruns").mkdir()
    return load_config(tmp_path / f"{name}.yaml"), f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def test_an_interrupted_run_resumes_keeping_its_finished_variants(tmp_path, monkeypatch):
    config, uri = _tracked_config(tmp_path, monkeypatch, "resumable", RESUMABLE)

    import experiments.run as run_module

    real = run_module.evaluate_variant
    calls = []

    def interrupted(program, variant, *args, **kwargs):
        calls.append(variant.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the second variant
        return real(program, variant, *args, **kwargs)

    monkeypatch.setattr(run_module, "evaluate_variant", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_variants(config, uri=uri)
    monkeypatch.setattr(run_module, "evaluate_variant", real)

    import mlflow

    first = mlflow.search_runs(experiment_names=["selfx-resumable"], output_format="list")
    parent = [r for r in first if "mlflow.parentRunId" not in r.data.tags][0]
    assert parent.info.status != "FINISHED"
    result = run_variants(config, uri=uri)
    assert result["parent_run_id"] == parent.info.run_id
    assert [v.get("resumed", False) for v in result["variants"]] == [True, False]
    runs = mlflow.search_runs(experiment_names=["selfx-resumable"], output_format="list")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["demos"] for r in children) == ["0", "2"]
    assert mlflow.get_run(parent.info.run_id).info.status == "FINISHED"
    # a finished config is not reopened: a repeat is a new parent run
    assert run_variants(config, uri=uri)["parent_run_id"] != parent.info.run_id


SAMPLED = """
name: sampled
lm: local:smollm2-135m
data: {source: sst2, train_n: 0, dev_n: 0, test_n: 1}
measure: {faithfulness_n: 0}
variants:
  - {program: EP, format: polarity, explanation_samples: 2}
"""


def test_a_variant_reading_its_label_over_sampled_explanations_runs_and_loads_back(tmp_path, monkeypatch):
    """The config key reaches the program, its MLflow run and the program loaded back from that run."""
    config, uri = _tracked_config(tmp_path, monkeypatch, "sampled", SAMPLED)
    result = run_variants(config, uri=uri)

    import dspy
    import mlflow

    from experiments.variants import load_program, variant_of
    from programs.lean_adapter import LeanAdapter
    from programs.lm import make_lm
    from programs.readout import to_answer

    runs = mlflow.search_runs(experiment_names=["selfx-sampled"], output_format="list")
    child = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result["parent_run_id"]][0]
    assert child.data.params["explanation_samples"] == "2"
    assert "over 2 sampled explanations" in child.data.tags["mlflow.note.content"]
    variant = variant_of(child.data.params)
    assert variant.name.endswith("-2samples")
    program = load_program(variant, child.info.run_id)
    assert program.explanation_samples == 2
    table = json.load(open(mlflow.MlflowClient(uri).download_artifacts(child.info.run_id, "examples.json",
                                                                        str(tmp_path))))
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    with dspy.context(lm=make_lm("local:smollm2-135m", cache=False), adapter=LeanAdapter()):
        again = to_answer(program(review=rows[0]["review"]))
    assert again.label == rows[0]["prediction"]
    assert json.loads(rows[0]["p_positive"])["logprob"] == pytest.approx(again.p_positive["logprob"], abs=1e-4)
