"""Shared fixtures: the real embedded model, loaded once per test session, and a shared-data check."""

from __future__ import annotations

import os
import tempfile

import pytest

from programs.data import shared_data_dir

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# DSPy's response cache defaults to ~/.dspy_cache, shared across sessions and code versions: a test must
# never be answered by another run's cached reply.
os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="selfx-dspy-cache-")
# Resolved once from where pytest starts, so tests that change directory still find ../shared/data.
os.environ.setdefault("SELFX_SHARED_DATA", str(shared_data_dir().resolve()))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI=true the shared data is required: its absence stops the run with one clear message instead of
    turning every test that needs it into a skip."""
    if os.environ.get("CI", "").lower() != "true":
        return
    data = shared_data_dir()
    missing = [part for part in ("sst2/validation.jsonl", "sst2/train.jsonl", "huang2023/sst_sentences.jsonl")
               if not (data / part).is_file()]
    if missing:
        raise pytest.UsageError(f"CI needs the shared data: {', '.join(str(data / m) for m in missing)} not found; "
                                "put ../shared/data beside the checkout or set SELFX_SHARED_DATA")


def require(condition: bool, what: str) -> None:
    """Skip a test that lacks what it needs; under CI=true the same lack is a failure, so CI cannot go green by
    skipping."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI needs {what}; .ci/run must provide it", pytrace=False)
    pytest.skip(f"needs {what}")


def require_shared(*parts: str):
    path = shared_data_dir().joinpath(*parts)
    require(path.exists(), f"{path} (../shared/data beside the repository, or SELFX_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def local_lm():
    """The embedded default model as a dspy.LM (no response cache, so every call reaches the model)."""
    from programs.lm import make_lm

    return make_lm("local", cache=False)


@pytest.fixture(scope="session")
def engine(local_lm):
    return local_lm.engine


@pytest.fixture(scope="session")
def smol_lm():
    """SmolLM2-135M: its llama.cpp numerics do not depend on how a prompt is split into batches, so
    exact-equality checks (KV reuse vs fresh evaluation) can use a 1e-4 tolerance. Gemma-3's drift
    by up to ~0.02 nats between batch splits (llama.cpp's CPU kernels differ by batch size)."""
    from programs.lm import make_lm

    return make_lm("local:smollm2-135m", cache=False)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The pinned tiny experiment (tests/golden), run once through ``selfx run``: its folder (holding
    ``mlruns/``), flattened figures and the command's JSON result. Shared by the pinned-figure, MLflow,
    report and browser tests."""
    import json

    from tests.golden.figures import run_figures

    folder = tmp_path_factory.mktemp("tiny")
    figures = run_figures(folder)
    return folder, figures, json.loads((folder / "run.json").read_text())
