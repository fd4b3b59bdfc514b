"""The replay study on the study's recorded data (no LM)."""

import pytest

from experiments.replay import replay_study
from experiments.tables import markdown_tables
from tests.conftest import require_shared


@pytest.fixture(scope="module")
def llama_compat():
    require_shared("huang2023", "llama3", "perturbation_cache_pe.jsonl.gz")
    return replay_study("llama3", "compat")


def test_compat_computes_every_recorded_configuration(llama_compat):
    for config in ("P-E self", "E-P self", "P-E occlusion", "P-E lime", "P-E topk", "P occlusion"):
        row = llama_compat["faithfulness"][config]
        assert row["comprehensiveness_n"] == 100, config  # every text it needs was recorded
    assert "P-E self~occlusion" in llama_compat["agreement"]
    assert "random" in markdown_tables(llama_compat)


def test_corrected_occlusion_rankdel_is_one_by_construction():
    require_shared("huang2023", "llama3", "perturbation_cache_pe.jsonl.gz")
    report = replay_study("llama3", "corrected")
    # occlusion values are the single-deletion drops themselves: a perfect deletion-rank correlation
    assert report["faithfulness"]["P-E occlusion"]["rankdel"] == pytest.approx(1.0)
    # texts the study never asked are counted as excluded, never filled in
    assert report["faithfulness"]["P-E self"]["comprehensiveness_excluded"] > 0
