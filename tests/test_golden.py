"""Pinned reference figures: replay (both models, both modes, every cell), the switch-ablation document, and a
live study on the real SmolLM2 model (the pinned run is checked in test_run_mlflow.py, beside its MLflow store).
Regenerate deliberately with ``python -m tests.golden.regenerate``.
"""

from __future__ import annotations

import pytest

from tests.golden.figures import compare, load, replay_figures, study_figures, tolerance


@pytest.mark.parametrize("model", ["llama3", "gpt4o"])
@pytest.mark.parametrize("mode", ["compat", "corrected"])
def test_replay_reproduces_every_pinned_cell(model, mode):
    pinned = load(f"replay_{model}_{mode}")
    assert len(pinned["figures"]) > 300  # every configuration x metric, CIs and counts included
    assert compare(pinned, replay_figures(model, mode), tolerance=1e-12) == []


def test_switch_ablation_document_is_current(tmp_path):
    """docs/compat-vs-corrected.md is generated: regenerating it must give the committed file."""
    from pathlib import Path

    from experiments.cli import main

    out = tmp_path / "differences.md"
    assert main(["replay", "--differences", str(out)]) == 0
    committed = Path(__file__).resolve().parents[1] / "docs" / "compat-vs-corrected.md"
    assert out.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), \
        "docs/compat-vs-corrected.md is stale: regenerate it with `selfx replay --differences` and review the diff"


@pytest.mark.model
def test_live_study_on_two_sentences_reproduces_the_pinned_tables(tmp_path):
    pinned = load("study_smollm2")
    assert compare(pinned, study_figures(tmp_path), tolerance=tolerance(pinned)) == []
