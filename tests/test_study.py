"""`selfx study` end to end on the embedded model: every table cell, files, MLflow, and a free re-run."""

from __future__ import annotations

import json

import mlflow
import pytest

from experiments.cli import main

KINDS = ("self", "topk", "occlusion", "lime", "random")


@pytest.mark.model
def test_live_study_tables_files_mlflow_and_a_fully_cached_rerun(tmp_path, capsys):
    data = tmp_path / "two.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ({"text": "a warm , funny film", "label": 1},
                                                       {"text": "dull and far too long", "label": 0})) + "\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["study", "--data", str(data), "--n", "2", "--lime-samples", "2", "--cache", str(tmp_path / "probe.sqlite"),
            "--out", str(tmp_path / "out"), "--tracking-uri", uri]

    assert main([*args, "--json", str(tmp_path / "first.json")]) == 0
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["backend"] == "local" and first["n_sentences"] == 2 and first["value_mode"] == "expected"
    for order in ("P-E", "E-P"):
        for kind in KINDS:
            row = first["faithfulness"][f"{order} {kind}"]
            # top-k is scored as the study scored it: one deletion step, not ERASER bins
            metric = "comprehensiveness" if kind == "topk" else "comprehensiveness_bins"
            assert row[f"{metric}_n"] == 2, (order, kind, row)
        # deleting tokens in occlusion's order is occlusion's own ranking: a rank correlation of 1
        assert first["faithfulness"][f"{order} occlusion"]["rankdel"] == pytest.approx(1.0)
        assert first["agreement"][f"{order} self~occlusion"]["rank_correlation_n"] == 2
        stats = first["probe_stats"][order]
        assert stats["cache_hits"] + stats["model_calls"] == stats["unique"] > 0, (order, stats)
    # both orders probe through the same prediction-only label slot, so E-P may reuse all of P-E's answers
    assert first["probe_stats"]["P-E"]["model_calls"] > 0
    assert "Live study" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"study_{first['model']}_corrected.csv", f"study_{first['model']}_corrected.md"]

    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("selfx-study").experiment_id])
    assert len(runs) == 1
    assert runs[0].data.params["value_mode"] == "expected"
    assert runs[0].data.metrics["faithfulness/P-E occlusion/rankdel"] == pytest.approx(1.0)

    # The re-run answers every perturbed text from the probe cache and reproduces the tables.
    assert main([*args, "--no-mlflow", "--json", str(tmp_path / "second.json")]) == 0
    second = json.loads((tmp_path / "second.json").read_text())
    for order, stats in second["probe_stats"].items():
        assert stats["model_calls"] == 0 and stats["cache_hits"] == stats["unique"] > 0, (order, stats)
    assert second["faithfulness"] == first["faithfulness"] and second["agreement"] == first["agreement"]
