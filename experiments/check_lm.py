"""``selfx check-lm``: the typed round trip (review -> label, confidence) on the first N SST-2 sentences."""

from __future__ import annotations

import time
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from experiments import progress
from programs.data import load_examples
from programs.lean_adapter import default_adapter
from programs.lm import describe_lm, history_tokens, make_lm
from programs.signatures import Sentiment
from programs.types import first_line


def check_lm(spec: str = "local", *, api_base: str | None = None, n: int = 10, data: str = "sst2") -> dict[str, Any]:
    """Classify the first ``n`` examples through ``dspy.Predict(Sentiment)`` and summarise.

    ``accuracy`` is over parsed answers; failures are counted in ``parse_failures``, never scored.
    """
    examples = load_examples(data, split="validation", n=n)
    lm = make_lm(spec, api_base=api_base, cache=False)
    program = dspy.Predict(Sentiment)
    parsed = correct = positives = tokens = 0
    failures: list[dict[str, str]] = []
    start = time.perf_counter()
    with dspy.context(lm=lm, adapter=default_adapter(lm)):
        for example in progress.track(examples, "check-lm"):
            history_before = len(lm.history)
            try:
                prediction = program(review=example.text)
            except AdapterParseError as exc:
                failures.append({"id": example.id, "reason": first_line(exc, 200),
                                 "raw": str(getattr(exc, "lm_response", ""))[:500]})
            else:
                parsed += 1
                positives += prediction.label == "positive"
                correct += int(prediction.label == "positive") == example.label
            tokens += history_tokens(lm.history[history_before:])
    seconds = time.perf_counter() - start
    return {
        **describe_lm(lm),
        "n": len(examples),
        "parsed": parsed,
        "parse_failures": len(failures),
        "accuracy": correct / parsed if parsed else None,
        "positive_share": positives / parsed if parsed else None,
        "seconds_per_example": seconds / len(examples),
        "tokens_per_example": tokens / len(examples),
        "failures": failures,
    }
