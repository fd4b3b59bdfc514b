"""What a person sees, checked in a real headless Chromium: the report page and the MLflow UI on the tiny run.

Screenshots stay in test-artifacts/ (git-ignored) for people to look at.
"""

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from experiments.report import build_report
from experiments.servers import free_port
from tests.conftest import require

pytestmark = [pytest.mark.model, pytest.mark.browser]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium(url: str, tmp_path: Path, *, screenshot: str, budget_ms: int = 20000, width: int = 1400) -> str:
    """The DOM after the page ran its scripts, and a screenshot of it."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    require(binary is not None, "Debian's chromium (apt-get install -y chromium), which .ci/run installs")
    ARTIFACTS.mkdir(exist_ok=True)
    common = [binary, *FLAGS, f"--window-size={width},1000", f"--user-data-dir={tmp_path / 'profile'}",
              f"--virtual-time-budget={budget_ms}"]
    subprocess.run([*common, f"--screenshot={ARTIFACTS / screenshot}", url], capture_output=True, timeout=120)
    done = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return done.stdout


def test_the_report_renders_variants_heatmaps_and_numbers_in_a_browser(tiny_run, tmp_path):
    folder, _, result = tiny_run
    path = build_report(result["parent_run_id"], uri=f"sqlite:///{folder}/mlruns/mlflow.db",
                        out=tmp_path / "report.html", log=False)
    dom = chromium(path.as_uri(), tmp_path, screenshot="report.png", budget_ms=3000)
    assert dom.count('<tr class="variant') == len(result["variants"])
    for item in result["variants"]:
        assert item["variant"] in dom and f"{item['metrics']['accuracy']:.3f}" in dom
    assert dom.count('class="heatmap"') == 2 and 'class="tok"' in dom
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_the_mlflow_ui_shows_the_parent_with_its_metrics_and_datasets(tiny_run, tmp_path):
    import os

    from experiments.tracking import ui_command

    folder, _, result = tiny_run
    port = free_port()
    command = ui_command(f"sqlite:///{folder}/mlruns/mlflow.db", port)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "mlflow ui did not start"
                time.sleep(1)
        import mlflow

        experiment = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder}/mlruns/mlflow.db").get_experiment_by_name(
            result["experiment"])
        base = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}"
        # a wide screen: the runs table renders only the columns in view, and MLflow's assistant panel takes a quarter
        table = chromium(f"{base}?workflowType=machine_learning", tmp_path, screenshot="mlflow-ui.png", width=2800)
        page = chromium(f"{base}/runs/{result['parent_run_id']}", tmp_path, screenshot="mlflow-parent-run.png",
                        width=2000)
    finally:
        server.terminate()
        server.wait(timeout=30)
    # the experiment page: the parent run by its readable name, the datasets its runs evaluated
    assert ">golden<" in table and "sst2 (validation[" in table
    # the parent's own page: the summary metrics and the description of what won
    assert "best_accuracy" in page and "best_comprehensiveness_bins" in page
    assert "best accuracy:" in page
