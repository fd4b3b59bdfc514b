"""A random-explanation baseline: U(-1, 1) values from a seeded stream per sentence."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from programs.types import Attribution


class RandomExplainer:
    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def texts(self, tokens: Sequence[str]) -> list[str]:
        """A random explanation asks the model nothing."""
        return []

    def explain(self, tokens: Sequence[str], probe: object = None) -> Attribution:
        # Own stream per sentence (seed + text), so baselines never share noise with other explainers.
        digest = hashlib.sha256(f"{self.seed}|{' '.join(tokens)}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return Attribution(tuple(float(v) for v in rng.uniform(-1, 1, len(tokens))), "random",
                           info={"seed": self.seed})
