"""The one program runner: a program over examples with ``dspy.Evaluate``, as value types with their cost.

Used by ``evaluate``, ``run``, ``optimize`` and ``study``. An exception inside the program becomes a counted
failure (``dspy.Evaluate`` would otherwise score it as an empty prediction).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from programs.lean_adapter import default_adapter
from programs.lm import history_tokens, is_embedded
from programs.readout import to_answer, to_attribution
from programs.self_explain import SentimentProgram, failed_prediction, label_log_odds
from programs.types import Answer, Attribution, Example


@dataclass
class Predictions:
    """One program's answers on a list of examples, in example order, with what they cost."""

    predictions: list[Any]
    answers: list[Answer]
    attributions: list[Attribution | None]
    odds: list[float | None]  # label log-odds read at the slot (None: failure or unavailable)
    durations: list[float]  # seconds per example
    seconds: float
    lm_calls: int
    tokens: int


def predict(program: SentimentProgram, examples: Sequence[Example], lm: Any, *,
            adapter: dspy.Adapter | None = None, threads: int | None = None, progress: bool = False) -> Predictions:
    """Run a program on every example: ``threads`` requests in flight on an API backend (default 4), one at a time
    on an in-process model (a lock serialises it anyway). Answers come back in example order either way."""
    adapter = adapter or default_adapter(lm)
    threads = 1 if is_embedded(lm) else (threads or 4)
    history_start = len(lm.history)
    durations: dict[str, float] = {}

    def timed(review: str) -> Any:
        started = time.perf_counter()
        prediction = program(review=review)
        durations[review] = time.perf_counter() - started
        return prediction

    devset = [dspy.Example(review=e.text, label="positive" if e.label else "negative").with_inputs("review")
              for e in examples]
    start = time.perf_counter()
    with dspy.context(lm=lm, adapter=adapter):
        result = dspy.Evaluate(devset=devset, metric=_label_metric, num_threads=threads, display_progress=progress,
                               provide_traceback=False)(timed)
    seconds = time.perf_counter() - start
    predictions = [prediction if "label" in prediction or getattr(prediction, "failure", None) else
                   failed_prediction("error: the program raised (see the dspy.Evaluate log)", None)
                   for _, prediction, _ in result.results]
    return Predictions(predictions=predictions, answers=[to_answer(p) for p in predictions],
                       attributions=[to_attribution(p, e.text) for p, e in zip(predictions, examples, strict=True)],
                       odds=[label_log_odds(p) for p in predictions],
                       durations=[durations.get(e.text, 0.0) for e in examples], seconds=seconds,
                       lm_calls=len(lm.history) - history_start, tokens=history_tokens(lm.history[history_start:]))


def _label_metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
    return float(getattr(prediction, "label", None) is not None and prediction.label == example.label)
