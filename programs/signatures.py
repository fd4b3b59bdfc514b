"""Typed DSPy signatures. Default instructions follow the study's prompts (the "paper" variant)."""

from __future__ import annotations

from typing import Literal

import dspy

PAPER_P_INSTRUCTIONS = (
    "You are a movie review analyst. Classify the sentiment of the movie review as positive or "
    "negative, and give your confidence in the classification as a number between 0 and 1."
)


class Sentiment(dspy.Signature):
    """You are a movie review analyst. Classify the sentiment of the movie review as positive or negative, and give your confidence in the classification as a number between 0 and 1."""  # noqa: E501

    review: str = dspy.InputField()
    label: Literal["negative", "positive"] = dspy.OutputField()
    confidence: float = dspy.OutputField(ge=0.0, le=1.0)
