"""``selfx bench`` on the real embedded model at a tiny size: every contract key is measured (figures, never
thresholds), and the API row's answers do not depend on the concurrency level."""

import functools
import json
import math

import pytest

from experiments import bench, study
from experiments.cli import main

CONTRACT = ("raw_tokens_per_second", "probe_texts_per_second_serial", "probe_texts_per_second_batched",
            "probe_speedup", "tokens_per_text_serial", "tokens_per_text_batched", "probe_fraction_of_raw",
            "study_seconds_cold", "study_seconds_cached", "api_speedup")


@pytest.mark.model
def test_bench_measures_every_contract_key(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "SCALES", {"quick": 1, "paper": 100})  # the study on one sentence
    # at one LIME sample per token (not 10): LIME's texts were most of the study's 200 s here
    monkeypatch.setattr(study, "live_study", functools.partial(study.live_study, lime_samples_per_token=1))
    monkeypatch.delenv("SELFX_LLAMA_SERVER", raising=False)  # llama-cpp-python's server, as in CI
    real = bench.bench
    monkeypatch.setattr(bench, "bench", lambda lm, scale, api=True: real(lm, scale, probe_texts=40, api_texts=6,
                                                                         api=api))
    out = tmp_path / "bench.json"
    assert main(["bench", "--lm", "local:smollm2-135m", "--json", str(out), "--no-mlflow"]) == 0
    result = json.loads(out.read_text())
    for key in CONTRACT:
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    # the trie walk evaluates fewer tokens than re-reading every review, on the same texts
    assert result["probe_texts"] == 40 and result["tokens_per_text_batched"] < result["tokens_per_text_serial"]
    assert result["study_model_calls_cold"] > 0 and result["study_model_calls_cached"] == 0
    assert result["api_server"] == "llama-cpp-python" and result["api_texts"] == 6
    assert result["api_failures_concurrency_1"] == result["api_failures_concurrency_4"] == 0
    # same answers in the same order; a server's prompt cache may split a prompt differently between runs
    assert result["api_labels_agree"] == 1.0 and result["api_max_p_difference"] < 1e-3
    assert "probe speed-up" in capsys.readouterr().out
