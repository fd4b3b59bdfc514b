"""docs/findings.md's tables are the measurements in docs/measurements/, rendered."""

import json

from experiments.findings import FINDINGS, MEASUREMENTS, main, render


def test_findings_tables_are_current():
    assert render(FINDINGS.read_text(encoding="utf-8"), MEASUREMENTS) == FINDINGS.read_text(encoding="utf-8"), \
        "docs/findings.md is stale: run python -m experiments.findings"
    assert main(["--check"]) == 0


def test_a_new_measurement_changes_its_table_and_nothing_else(tmp_path):
    row = {"model": "m", "backend": "local", "data": "huang2023", "format": "polarity", "n": 3, "demos": 16, "accuracy": 0.5,
           "seconds_per_example_median": 1.25,
           "comprehensiveness_bins": 0.2, "comprehensiveness_bins_ci_low": 0.1, "comprehensiveness_bins_ci_high": 0.3,
           "random_comprehensiveness_bins": 0.05, "occlusion_comprehensiveness_bins": 0.4,
           "comprehensiveness_bins_vs_random": 0.15, "comprehensiveness_bins_vs_random_ci_low": 0.02,
           "comprehensiveness_bins_vs_random_ci_high": 0.28, "comprehensiveness_bins_vs_random_p_value": 0.01}
    (tmp_path / "x.json").write_text(json.dumps({"PE": row}))
    text = "intro\n<!-- table: self-explanations -->\nold\n<!-- end: self-explanations -->\nprose\n"
    fresh = render(text, tmp_path)
    assert fresh.startswith("intro\n<!-- table: self-explanations -->\n| model |") and fresh.endswith(
        "<!-- end: self-explanations -->\nprose\n")
    line = fresh.splitlines()[4]
    assert line.startswith("| m | the study's sentences | P-E | polarity | 3 | 0.500 | 0.200 [0.100, 0.300] | 0.050 [n/a, n/a] | 0.400")
    assert "0.150 [0.020, 0.280], p 0.010" in line and "| 0.50 |" in line  # self / occlusion
    assert render(fresh, tmp_path) == fresh
