"""A tiny optimisation on the embedded model: trials as nested runs, a Pareto front, a resumable study."""

import pytest

from experiments.config import load_config
from experiments.optimize import optimize
from tests.conftest import require_shared

pytestmark = pytest.mark.model

TINY = """
name: tinyopt
lm: local:smollm2-135m
data: {source: sst2, train_n: 4, dev_n: 3, test_n: 3}
measure: {mode: corrected, probe: logprob, faithfulness_n: 2}
search:
  trials: 2
  objectives: [accuracy, comprehensiveness_bins]
  storage: sqlite:///STORE/optuna.db
  space:
    program: [PE-topk, PE]
    demos: [0]
    decision: [generated]
    optimizer: [none, bootstrap]
"""


def test_tiny_study_logs_trials_and_resumes(tmp_path, monkeypatch):
    require_shared("sst2", "validation.jsonl")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "opt.yaml").write_text(TINY.replace("STORE", str(tmp_path)))
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    config = load_config(tmp_path / "opt.yaml")
    result = optimize(config, uri=uri)
    table = result["trial_table"]
    done = [t for t in table if t["state"] == "COMPLETE"]
    assert len(done) == 2 and result["trials"] == len(table) and result["pareto"]
    assert all(t["duplicate_of"] is not None for t in table if t["state"] != "COMPLETE")  # repeats only
    assert "paper" in result["held_out"] and "accuracy_ci_low" in result["held_out"]["paper"]

    import mlflow

    experiment = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("selfx-tinyopt-optimize")
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    trials = [r for r in runs if "trial" in r.data.metrics]
    assert len(trials) == 2
    assert all(r.data.tags.get("mlflow.parentRunId") == result["parent_run_id"] for r in trials)
    parent_files = {f.path for f in mlflow.MlflowClient(tracking_uri=uri).list_artifacts(result["parent_run_id"])}
    assert "pareto.png" in parent_files
    assert all(len(t["values"]) == 2 and t["variant"]["program"] in ("PE-topk", "PE") and t["seconds"] > 0
               for t in done)
    assert result["wall_seconds"] >= sum(t["seconds"] for t in done)
    again = optimize(config, uri=uri)  # the study resumes: its budget is already spent
    assert again["trials"] == result["trials"]
    assert again["wall_seconds"] == result["wall_seconds"]  # the study's, not the re-run's


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["mipro", "gepa"])
def test_instruction_optimisers_run_on_the_embedded_model(optimizer, tmp_path, monkeypatch):
    """MIPROv2 and GEPA with a tiny budget, against the combined accuracy + faithfulness metric."""
    require_shared("sst2", "train.jsonl")
    import dspy

    from experiments.optimize.compile import compile_with
    from experiments.optimize.objective import OptimizerMetric
    from programs.data import load_examples
    from programs.lean_adapter import LeanAdapter
    from programs.lm import make_lm
    from programs.probe_cache import ProbeCache
    from programs.self_explain import SentimentProgram

    monkeypatch.chdir(tmp_path)
    (tmp_path / "opt.yaml").write_text(TINY.replace("STORE", str(tmp_path)))
    config = load_config(tmp_path / "opt.yaml")
    lm = make_lm("local:smollm2-135m", cache=True)
    train = load_examples("sst2", split="train", n=4)
    program = SentimentProgram("PE-topk")
    metric = OptimizerMetric("combined", 0.5, lm, config, ProbeCache(tmp_path / "probe.sqlite"), program=program)
    with dspy.context(lm=lm, adapter=LeanAdapter()):
        compiled = compile_with(optimizer, program, train, metric, lm, budget=4, seed=0)
        prediction = compiled(review=train[0].text)
        scored = metric(dspy.Example(review=train[0].text, label="positive" if train[0].label else "negative"),
                        prediction, None, "predict", None)
    assert isinstance(compiled, SentimentProgram) and prediction.label in ("positive", "negative")
    # combined = 0.5 x correct + 0.5 x comprehensiveness, and comprehensiveness may be negative (less faithful
    # than deleting nothing in particular)
    assert -0.5 <= float(scored.score) <= 1.0 and "ranked highest" in scored.feedback


def test_bootstrap_compiles_a_topk_program(tmp_path, monkeypatch):
    """A top-k prediction's fields become demo fields beside its inputs (review, k) without clashing."""
    require_shared("sst2", "train.jsonl")
    import dspy

    from experiments.optimize.compile import compile_with
    from experiments.optimize.objective import OptimizerMetric
    from programs.data import load_examples
    from programs.lean_adapter import LeanAdapter
    from programs.lm import make_lm
    from programs.self_explain import SentimentProgram

    monkeypatch.chdir(tmp_path)
    (tmp_path / "opt.yaml").write_text(TINY.replace("STORE", str(tmp_path)))
    lm = make_lm("local:smollm2-135m", cache=False)
    metric = OptimizerMetric("accuracy", 0.0, lm, load_config(tmp_path / "opt.yaml"), None,
                             program=SentimentProgram("EP-topk"))
    with dspy.context(lm=lm, adapter=LeanAdapter()):
        compiled = compile_with("bootstrap", SentimentProgram("EP-topk"), load_examples("sst2", split="train", n=6),
                                metric, lm, budget=4, seed=0)
    assert compiled.predict.demos and all("k" in demo and "top_words" in demo for demo in compiled.predict.demos)
