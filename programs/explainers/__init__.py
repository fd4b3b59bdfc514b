"""Perturbation explainers. Each sees only a probe, never a model; one file each, registered here."""

from __future__ import annotations

from programs.explainers.lime import Lime
from programs.explainers.occlusion import Occlusion
from programs.explainers.random import RandomExplainer

EXPLAINERS = {
    "occlusion": Occlusion,
    "lime": Lime,
    "random": RandomExplainer,
}


def explainer(name: str, **options):
    try:
        cls = EXPLAINERS[name]
    except KeyError:
        raise ValueError(f"unknown explainer {name!r}; choose one of {sorted(EXPLAINERS)}") from None
    return cls(**options)
