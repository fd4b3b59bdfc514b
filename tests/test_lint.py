"""The code passes the project's own lint rules (pyproject.toml [tool.ruff]), so they cannot drift out of date."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    require(importlib.util.find_spec("ruff") is not None, "ruff (pip install -e '.[test]')")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
