"""selfx report on the pinned tiny run: the variants, heat-maps and numbers the page must show."""

import pytest

from experiments.report import build_report

pytestmark = pytest.mark.model


def test_report_shows_variants_heatmaps_and_their_numbers(tiny_run, tmp_path):
    folder, _, result = tiny_run
    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    path = build_report(result["parent_run_id"], uri=uri, out=tmp_path / "report.html")
    html = path.read_text(encoding="utf-8")
    for item in result["variants"]:
        assert item["variant"] in html
        assert f"{item['metrics']['accuracy']:.3f}" in html  # the accuracy the run logged, shown as logged
    pe = next(item for item in result["variants"] if item["variant"].startswith("PE"))
    assert f"{pe['metrics']['comprehensiveness_bins']:.3f}" in html
    # one heat-map per faithfulness sentence (2), rows for the self-explanation and the three baselines, every token
    assert html.count('class="heatmap"') == 2
    assert all(f'data-kind="{kind}"' in html for kind in ("self", "occlusion", "random", "lexicon"))
    # the run measured the lexicon: its columns, with P-E's figures as logged
    assert "<th>self − lexicon</th>" in html
    assert f"{pe['metrics']['comprehensiveness_bins_vs_lexicon']:.3f}" in html
    assert html.count('class="tok"') >= 3 * (len("dull and far too long".split()))
    assert "<details><summary>" in html and "data:image/png;base64," in html  # prompts and embedded figures
    assert "http" not in html.split("<body>")[1].split("<details>")[0]  # opens offline: nothing fetched

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    assert path.name in {a.path for a in client.list_artifacts(result["parent_run_id"])}
