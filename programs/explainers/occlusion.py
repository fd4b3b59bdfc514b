"""Occlusion: occ_i = P(pos | x) - P(pos | x without token i); n + 1 probe texts."""

from __future__ import annotations

from collections.abc import Sequence

from programs.explainers.base import p_positive
from programs.perturb import delete
from programs.probe import Probe
from programs.types import Attribution


class OcclusionExplainer:
    def __init__(self, *, p_source: str = "stated", failure_as_default: bool = False) -> None:
        self.p_source = p_source
        self.failure_as_default = failure_as_default

    def texts(self, tokens: Sequence[str]) -> list[str]:
        """Every text :meth:`explain` asks the probe about (the original first)."""
        return [" ".join(tokens)] + [delete(tokens, [i]) for i in range(len(tokens))]

    def explain(self, tokens: Sequence[str], probe: Probe) -> Attribution:
        texts = self.texts(tokens)
        answers = probe.answers(texts)
        probs = [p_positive(a, self.p_source, failure_as_default=self.failure_as_default) for a in answers]
        p0 = probs[0]
        values = tuple(None if p0 is None or p is None else p0 - p for p in probs[1:])
        return Attribution(values, "occlusion", info={"p_source": self.p_source, "perturbation": "delete",
                                                      "probe": probe.fingerprint, "texts": len(set(texts)),
                                                      "failed": sum(not a.ok for a in answers)})
