"""The five sentiment programs as DSPy modules: P, P-E, E-P (full) and P-E, E-P (top-k).

Each returns a ``dspy.Prediction``; a failed answer is a prediction with ``failure`` set and the
raw reply kept (never a default label). ``programs.readout`` turns predictions into value types.
"""

from __future__ import annotations

from typing import Any, Literal

import dspy
from dspy.utils.exceptions import AdapterParseError

from programs.lm import is_embedded
from programs.readout import topk_size
from programs.signatures import SIGNATURES
from programs.slot_decoder import DecodeOptions
from programs.types import tokenize

PROGRAM_NAMES = tuple(SIGNATURES)
ValueMode = Literal["sample", "expected"]


class ContextOverflow(ValueError):
    """The prompt does not fit the model's context."""


class SentimentProgram(dspy.Module):
    """Classify a review and (for P-E/E-P) explain it.

    Args:
        name: P, PE, EP, PE-topk or EP-topk.
        k_fraction: top-k size as a share of the review's tokens (the study's 0.2).
        value_mode: how the embedded engine reads importances: ``sample`` (the decoded grid value)
            or ``expected`` (the probability-weighted value at each slot).
    """

    def __init__(self, name: str = "P", *, k_fraction: float = 0.2, value_mode: ValueMode = "sample") -> None:
        super().__init__()
        if name not in SIGNATURES:
            raise ValueError(f"unknown program {name!r}; choose one of {list(PROGRAM_NAMES)}")
        if value_mode not in ("sample", "expected"):
            raise ValueError(f"value_mode must be sample or expected, got {value_mode!r}")
        self.name = name
        self.k_fraction = k_fraction
        self.value_mode = value_mode
        self.predict = dspy.Predict(SIGNATURES[name])

    @property
    def order(self) -> str:
        return {"P": "P", "PE": "P-E", "EP": "E-P"}[self.name.split("-")[0]]

    @property
    def granularity(self) -> str | None:
        return None if self.name == "P" else ("topk" if self.name.endswith("topk") else "full")

    def forward(self, review: str) -> dspy.Prediction:
        inputs: dict[str, Any] = {"review": review}
        if self.granularity == "topk":
            inputs["k"] = topk_size(len(tokenize(review)), self.k_fraction)
        config: dict[str, Any] = {"logprobs": True, "top_logprobs": 20}
        if is_embedded(dspy.settings.lm):
            config["metadata"] = DecodeOptions(self.value_mode).to_metadata()
        try:
            prediction = self.predict(**inputs, config=config)
        except AdapterParseError as exc:
            return failed_prediction(f"parse: {str(exc).splitlines()[0][:300]}", getattr(exc, "lm_response", None))
        except ValueError as exc:
            if "context" not in str(exc):
                raise
            return failed_prediction(f"context overflow: {exc}", None)
        prediction.failure = None
        if "k" in inputs:
            prediction.k = inputs["k"]
        return prediction


def failed_prediction(reason: str, raw: str | None) -> dspy.Prediction:
    return dspy.Prediction(label=None, confidence=None, failure=reason, raw=raw)
