"""Typed DSPy signatures for the five programs.

Default instructions follow the study's prompts (the "paper" variant, Huang et al. 2023, digest
section 1.3), asking for JSON instead of Python tuples. Field order is decoding order: in E-P the
explanation comes before the label, in P-E after it. Optimisers may change instructions and demos,
never fields.

Field-name contract used by the adapter and readers: ``review`` is the text, ``label`` and
``confidence`` the prediction, ``explanation`` a full explanation (one ``[token, value]`` pair per
whitespace token, in order) and ``top_words`` a top-k explanation (``k`` words of the review).
``restated_review`` is the review written again between a full E-P explanation and its label: ~125
answer tokens between the review and the label slot cost Gemma-3-270M's label 0.05 accuracy and 0.035
AUC, which the restatement gives back (docs/findings.md, "E-P: what in the answer costs the label its
ranking"); the label is still decided after, and conditioned on, the explanation.

Full explanations come in two formats (:func:`signature`): ``numeric``, the study's importance in
[-1, 1] for every token, and ``polarity``, one of ``negative`` / ``neutral`` / ``positive`` for every
token (a small model may speak in words rather than numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import dspy

Label = Literal["negative", "positive"]
Polarity = Literal["negative", "neutral", "positive"]
FORMATS = ("numeric", "polarity")
RESTATED = "restated_review"

_ANALYST = "You are a movie review analyst."
_CLASSIFY = ("classify the sentiment of the movie review as positive or negative and give your confidence "
             "in the classification as a number between 0 and 1")
_FULL = ("give the importance of every word and punctuation token of the review to its sentiment, in order, "
         "as [token, importance] pairs, where importance is a number from -1 (negative sentiment) to 1 "
         "(positive sentiment). Tokens are separated by spaces; it does not matter whether the review "
         "makes sense")
_POLARITY = ("label every word and punctuation token of the review, in order, as [token, polarity] pairs, where "
             "polarity is negative, neutral or positive: the sentiment that token contributes. Tokens are "
             "separated by spaces; it does not matter whether the review makes sense")
_TOPK = ("identify the k most significant words of the review, ranked from the most positive sentiment to "
         "the least positive sentiment")

PAPER_INSTRUCTIONS = {
    "P": f"{_ANALYST} {_CLASSIFY.capitalize()}.",
    "PE": f"{_ANALYST} First, {_CLASSIFY}. Then, {_FULL}.",
    "EP": f"{_ANALYST} First, {_FULL}. Then, {_CLASSIFY}.",
    "PE-topk": f"{_ANALYST} First, {_CLASSIFY}. Then, {_TOPK}.",
    "EP-topk": f"{_ANALYST} First, {_TOPK}. Then, {_CLASSIFY}.",
}


class Predict(dspy.Signature):
    review: str = dspy.InputField()
    label: Label = dspy.OutputField()
    confidence: float = dspy.OutputField(ge=0.0, le=1.0)


class PredictExplain(dspy.Signature):
    review: str = dspy.InputField()
    label: Label = dspy.OutputField()
    confidence: float = dspy.OutputField(ge=0.0, le=1.0)
    explanation: list[tuple[str, float]] = dspy.OutputField()


class ExplainPredict(dspy.Signature):
    review: str = dspy.InputField()
    explanation: list[tuple[str, float]] = dspy.OutputField()
    restated_review: str = dspy.OutputField(desc="the review again, word for word")
    label: Label = dspy.OutputField()
    confidence: float = dspy.OutputField(ge=0.0, le=1.0)


class PredictExplainTopK(dspy.Signature):
    review: str = dspy.InputField()
    k: int = dspy.InputField()
    label: Label = dspy.OutputField()
    confidence: float = dspy.OutputField(ge=0.0, le=1.0)
    top_words: list[str] = dspy.OutputField()


class ExplainPredictTopK(dspy.Signature):
    review: str = dspy.InputField()
    k: int = dspy.InputField()
    top_words: list[str] = dspy.OutputField()
    label: Label = dspy.OutputField()
    confidence: float = dspy.OutputField(ge=0.0, le=1.0)


SIGNATURES: dict[str, type[dspy.Signature]] = {
    name: base.with_instructions(PAPER_INSTRUCTIONS[name])
    for name, base in {"P": Predict, "PE": PredictExplain, "EP": ExplainPredict,
                       "PE-topk": PredictExplainTopK, "EP-topk": ExplainPredictTopK}.items()
}

# The check-lm round trip is the prediction-only program's signature.
Sentiment = SIGNATURES["P"]

_POLARITY_INSTRUCTIONS = {
    "PE": f"{_ANALYST} First, {_CLASSIFY}. Then, {_POLARITY}.",
    "EP": f"{_ANALYST} First, {_POLARITY}. Then, {_CLASSIFY}.",
}


def signature(name: str, format: str = "numeric") -> type[dspy.Signature]:
    """The signature of a program in an explanation format (``numeric`` or ``polarity``; full explanations only)."""
    if format not in FORMATS:
        raise ValueError(f"unknown explanation format {format!r}; choose one of {list(FORMATS)}")
    if format == "numeric" or name not in _POLARITY_INSTRUCTIONS:
        return SIGNATURES[name]
    return SIGNATURES[name].with_updated_fields("explanation", type_=list[tuple[str, Polarity]]).with_instructions(
        _POLARITY_INSTRUCTIONS[name])


def with_restatement(signature: type[dspy.Signature], demo: Mapping[str, Any]) -> dict[str, Any]:
    """A demo's fields, with its review as the restatement when the signature asks for one and the demo has
    none (a demo built from a review, or saved before E-P restated its review)."""
    if RESTATED in signature.output_fields and RESTATED not in demo and "review" in demo:
        return {**demo, RESTATED: demo["review"]}
    return dict(demo)
