import json
import subprocess
import sys

import pytest

from experiments.cli import main
from programs.data import injected_pairs, load_examples
from programs.explainers.lexicon import lexicon_values
from tests.conftest import require_shared


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "selfx" in capsys.readouterr().out
    assert main([]) == 2


def test_bad_lm_spec_is_one_clear_line(capsys):
    assert main(["check-lm", "--lm", "gpt-nonsense", "--n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown LM spec" in err[0]


@pytest.mark.parametrize("command", ["evaluate", "study"])
def test_expected_values_on_an_api_model_are_refused_before_any_call(command, capsys):
    args = [command, "--lm", "some-model", "--api-base", "http://127.0.0.1:9/v1", "--value-mode", "expected"]
    assert main(args + ["--n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--value-mode sample" in err[0]


def test_evaluate_passes_the_demo_draw_on(monkeypatch):
    import experiments.evaluate

    seen = {}
    monkeypatch.setattr(experiments.evaluate, "evaluate", lambda programs, **settings: seen.update(settings) or {})
    assert main(["--quiet", "evaluate", "--program", "PE", "--demo-source", "lexicon", "--demo-seed", "3"]) == 0
    assert seen["demo_seed"] == 3 and seen["demo_source"] == "lexicon"
    assert main(["--quiet", "evaluate", "--program", "PE"]) == 0
    assert seen["demo_seed"] == 0


@pytest.mark.model
def test_check_lm_end_to_end_with_the_embedded_model(tmp_path):
    require_shared("sst2", "validation.jsonl")
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, "-m", "experiments.cli", "check-lm", "--n", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    for key in ("backend", "model", "n", "parsed", "accuracy", "seconds_per_example"):
        assert key in summary
    assert summary["n"] == 3 and summary["parsed"] == 3


@pytest.mark.model
def test_evaluate_on_injected_reviews_counts_label_flips(tmp_path):
    require_shared("sst2", "validation.jsonl")
    out = tmp_path / "injected.json"
    assert main(["--quiet", "evaluate", "--lm", "local:smollm2-135m", "--program", "P", "--data", "injected",
                 "--n", "4", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["P"]
    assert row["n"] == 4 and row["injection_flip_rate_n"] + row["injection_flip_rate_excluded"] == 4
    assert 0 <= row["injection_to_target_rate"] <= row["injection_flip_rate"] <= 1
    assert row["parse_failure_rate"] == 0.0  # the answer's format never changes under skeleton decoding
    # every sentence's answer is kept, so runs on the same sentences can be compared pair by pair
    assert [e["id"] for e in row["examples"]] == [injected.id for _, injected in injected_pairs(n=4)]
    assert all(e["label"] in ("negative", "positive") and e["gold"] in (0, 1) and isinstance(e["log_odds"], float)
               for e in row["examples"])


@pytest.mark.model
def test_skip_evaluates_the_sentences_after_the_first(tmp_path):
    require_shared("sst2", "validation.jsonl")
    base = ["--quiet", "evaluate", "--lm", "local:smollm2-135m", "--program", "P", "--demos", "0",
            "--decision", "generated"]
    assert main([*base, "--n", "5", "--json", str(tmp_path / "all.json")]) == 0
    assert main([*base, "--skip", "3", "--n", "2", "--json", str(tmp_path / "skip.json")]) == 0
    whole, skipped = (json.loads((tmp_path / f"{name}.json").read_text())["P"] for name in ("all", "skip"))
    assert skipped["skip"] == 3 and skipped["n"] == 2 and whole["skip"] == 0
    assert [e["id"] for e in skipped["examples"]] == [e.id for e in load_examples("sst2", n=5)[3:]]
    # a per-sentence decision rule: the same sentences get the same answers whatever comes before them
    assert ([(e["label"], round(e["log_odds"], 6)) for e in skipped["examples"]]
            == [(e["label"], round(e["log_odds"], 6)) for e in whole["examples"][3:]])


# what differs between two runs of the same sentences: timings, and what the probe cache already held
RUN_SPECIFIC = {"wall_seconds", "seconds_per_example", "seconds_per_example_median", "faithfulness_seconds",
                "faithfulness_probe_calls", "faithfulness_cache_hits"}


def _same_run(row):
    return {k: ([{f: v for f, v in e.items() if f != "seconds"} for e in row[k]] if k == "examples" else row[k])
            for k in row if k not in RUN_SPECIFIC | {"merged_shards"}}


@pytest.mark.model
@pytest.mark.parametrize("program, options", [("PE", ["--decision", "batch", "--format", "polarity", "--faithfulness",
                                                      "--lime-samples", "1", "--lexicon"]),
                                              ("P", ["--decision", "all"])])
def test_merged_shards_report_what_the_whole_run_reports(program, options, tmp_path):
    require_shared("sst2", "validation.jsonl")
    base = ["--quiet", "evaluate", "--lm", "local:smollm2-135m", "--program", program, "--demos", "0", *options,
            "--n", "5"]
    assert main([*base, "--json", str(tmp_path / "whole.json")]) == 0
    for k in (2, 1):  # any order
        assert main([*base, "--shard", f"{k}/2", "--json", str(tmp_path / f"{k}.json")]) == 0
    first = json.loads((tmp_path / "1.json").read_text())[program]
    assert first["n"] == 2 and first["shard"] == {"index": 1, "count": 2, "start": 0, "stop": 2, "of": 5}
    assert main(["merge", str(tmp_path / "2.json"), str(tmp_path / "1.json"), "--json",
                 str(tmp_path / "merged.json")]) == 0
    whole = json.loads((tmp_path / "whole.json").read_text())[program]
    merged = json.loads((tmp_path / "merged.json").read_text())[program]
    assert merged["n"] == 5 and merged["merged_shards"] == 2 and "shard" not in merged
    assert _same_run(merged) == _same_run(whole)
    if "comprehensiveness_bins" in whole:  # the figures the table reads are there, and equal
        assert merged["comprehensiveness_bins_vs_random_ci_low"] == whole["comprehensiveness_bins_vs_random_ci_low"]
        assert whole["explainers"] == ["occlusion", "random", "lime", "lexicon"]
        assert merged["comprehensiveness_bins_vs_lexicon"] == whole["comprehensiveness_bins_vs_lexicon"]
        assert whole["lexicon_comprehensiveness_bins_share_of_occlusion_n"] == 5
        # each sentence keeps every kind's word values beside its figures (what each explanation ranked first)
        for example in whole["examples"]:
            tokens, kept = example["tokens"], example["explanations"]
            assert set(kept) == {"self", "occlusion", "random", "lime", "lexicon"}
            assert all(len(kept[kind]["values"]) == len(tokens) for kind in kept)
            assert kept["lexicon"]["values"] == [round(v, 6) for v in lexicon_values(tokens)]
            assert any(v not in (None, 0.0) for v in kept["self"]["values"])


@pytest.mark.model
def test_merge_refuses_shards_of_different_runs(tmp_path, capsys):
    require_shared("sst2", "validation.jsonl")
    for k, fmt in ((1, "numeric"), (2, "polarity")):
        assert main(["--quiet", "evaluate", "--lm", "local:smollm2-135m", "--program", "PE", "--demos", "0",
                     "--format", fmt, "--n", "2", "--shard", f"{k}/2", "--json", str(tmp_path / f"{k}.json")]) == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "1.json"), str(tmp_path / "2.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from" in err[0] and "'format'" in err[0]
