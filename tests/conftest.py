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


def require_shared(*parts: str):
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/data beside the repository, or SELFX_SHARED_DATA)")
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
