"""The two metric modes as explicit switches over one code path.

``compat`` reproduces the study's code as the digest describes it, defects included;
``corrected`` fixes the defects of its section 4. Each switch names the defect it concerns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class MetricMode:
    name: str
    #: 1: comprehensiveness re-converts P0 inside its loop (alternates for negative predictions)
    p0_reconverted: bool
    #: 3: rank toward the predicted class and score P(predicted class) instead of positive-first / P(pos)
    class_aware: bool
    #: 5: the empty text in comp/suff is assumed 0.5 (compat) or the model's answer on it (corrected)
    empty_assumed_half: bool
    #: 1 (GPT-4o file): comprehensiveness adds +0.5 for the empty text instead of p - 0.5
    empty_term_plus_half: bool
    #: 4: DF_MIT flips when P(pos) crosses 0.5 (compat, 2024 code) or when the label changes
    df_mit_crossing: bool
    #: 2: RankDel uses raw confidences of whatever label was predicted (compat) or P(predicted class)
    rankdel_raw_confidence: bool
    #: 14: uniform tie-breaking noise added to values before ranking/correlating (0 = none, ties kept)
    noise: float
    #: 9: a failed answer becomes (0, 0.5) (compat) or is excluded and counted (corrected)
    failure_as_default: bool
    #: 6: sufficiency as |P0 - P(kept)| (compat) or the signed drop of the predicted class (ERASER)
    sufficiency_absolute: bool

    def with_plus_half(self) -> MetricMode:
        return replace(self, empty_term_plus_half=True)


COMPAT = MetricMode("compat", p0_reconverted=True, class_aware=False, empty_assumed_half=True,
                    empty_term_plus_half=False, df_mit_crossing=True, rankdel_raw_confidence=True, noise=0.001,
                    failure_as_default=True, sufficiency_absolute=True)
CORRECTED = MetricMode("corrected", p0_reconverted=False, class_aware=True, empty_assumed_half=False,
                       empty_term_plus_half=False, df_mit_crossing=False, rankdel_raw_confidence=False, noise=0.0,
                       failure_as_default=False, sufficiency_absolute=False)
MODES = {"compat": COMPAT, "corrected": CORRECTED}


def metric_mode(name: str) -> MetricMode:
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown metric mode {name!r}; choose one of {sorted(MODES)}") from None
