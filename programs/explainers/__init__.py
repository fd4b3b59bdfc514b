"""Perturbation explainers. Each sees only a probe, never a model; one file each, registered here."""

from __future__ import annotations

from typing import Any

from programs.explainers.lexicon import LexiconExplainer
from programs.explainers.lime import LimeExplainer
from programs.explainers.occlusion import OcclusionExplainer
from programs.explainers.random import RandomExplainer

EXPLAINERS = {
    "occlusion": OcclusionExplainer,
    "lime": LimeExplainer,
    "lexicon": LexiconExplainer,
    "random": RandomExplainer,
}


def explainer(name: str, **options: Any) -> Any:
    try:
        cls = EXPLAINERS[name]
    except KeyError:
        raise ValueError(f"unknown explainer {name!r}; choose one of {sorted(EXPLAINERS)}") from None
    return cls(**options)
