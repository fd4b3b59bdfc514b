"""The one place where DSPy predictions become selfx value types (Answer, Attribution).

Also: alignment of API answers to token positions with a stated policy, and label probabilities read
from logprobs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp

from programs.types import LABELS, Answer, Attribution, stated_p_positive, tokenize, topk_size


def align_full(tokens: Sequence[str], pairs: Sequence[Sequence[Any]] | None) -> Attribution:
    """Importances per token position.

    Policy ``index`` when the reply lists exactly the review's tokens in order (always so with
    skeleton decoding); otherwise ``first-unused-match``: each position takes the first unused
    pair with the identical token string (the study's matcher), unmatched positions are None.
    A value outside [-1, 1] or not a number is a range violation: counted, and the position is None.
    """
    pairs = list(pairs or [])
    words = [str(p[0]) if len(p) > 0 else "" for p in pairs]
    violations = 0

    def value(pair: Sequence[Any]) -> float | None:
        nonlocal violations
        v = pair[1] if len(pair) > 1 else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not -1 <= v <= 1:
            violations += 1
            return None
        return float(v)

    if words == list(tokens):
        values = [value(p) for p in pairs]
        policy = "index"
    else:
        used = [False] * len(pairs)
        values = []
        for token in tokens:
            match = next((j for j, w in enumerate(words) if not used[j] and w == token), None)
            if match is None:
                values.append(None)
            else:
                used[match] = True
                values.append(value(pairs[match]))
        policy = "first-unused-match"
    return Attribution(tuple(values), "self", info={"policy": policy, "range_violations": violations,
                                                     "reply_items": len(pairs)})


def align_topk(tokens: Sequence[str], words: Sequence[str] | None, k: int) -> Attribution:
    """Top-k words to positions: each word takes its first unused occurrence in the review."""
    used: set[int] = set()
    ranking: list[int] = []
    for word in words or []:
        position = next((i for i, t in enumerate(tokens) if t == word and i not in used), None)
        if position is not None:
            used.add(position)
            ranking.append(position)
    return Attribution((None,) * len(tokens), "topk", ranking=tuple(ranking),
                       info={"policy": "first-unused-occurrence", "k": k, "matched_share": len(ranking) / k})


# Where the label's value starts in an answer: DSPy's JSON answers (lean and JSON adapters) and its
# chat format's field header.
_LABEL_VALUE = re.compile(r'"label"\s*:\s*"|\[\[ ## label ## \]\]\s*')


def label_log_probs(logprobs: Any) -> dict[str, float] | None:
    """Label log-probabilities at the label slot, renormalised over the two labels.

    The slot is found by its place in the answer: the entries' tokens, concatenated, spell the
    answer (an API's tokens; the embedded engine's fixed text and slots), and the label is the
    entry holding the first character after the ``label`` key. Its alternatives are whole labels
    (embedded slot) or tokens (API ``top_logprobs``: a token that is a prefix of exactly one label
    counts for it). None when there is no label key, or an allowed label is missing from the
    alternatives (the probability is unknown).
    """
    content = (logprobs or {}).get("content") if isinstance(logprobs, dict) else None
    slot = _label_slot(content or [])
    if slot is None:
        return None
    index, before = slot
    return _renormalised_labels(content[index].get("top_logprobs") or [], before)


def with_label_log_odds(logprobs: dict[str, Any], odds: float) -> dict[str, Any]:
    """``logprobs`` with the label slot's alternatives set to the two labels' log-probabilities at ``odds``
    (log P(positive) - log P(negative)): for an answer whose label reading combines several decodes. Needs the
    embedded engine's answer, where the label slot is an entry of its own whose alternatives are whole labels."""
    content = [dict(entry) for entry in logprobs["content"]]
    slot = _label_slot(content)
    if slot is None or slot[1]:
        raise ValueError("no label slot of its own in these logprobs: only an embedded model's answer can be combined")
    entry = content[slot[0]]
    lp = {"positive": -float(np.logaddexp(0.0, -odds)), "negative": -float(np.logaddexp(0.0, odds))}
    entry["top_logprobs"] = [{"token": label, "logprob": lp[label]} for label in LABELS]
    entry["logprob"] = lp.get(str(entry.get("token", "")), entry.get("logprob"))
    return {**logprobs, "content": content}


def _label_slot(content: Sequence[dict[str, Any]]) -> tuple[int, str] | None:
    """Where the label's value starts: the index of the entry holding its first character, and the part of that
    entry's token before it (e.g. ' "' in ' "pos', shared by its alternatives; empty for an embedded slot)."""
    tokens = [str(entry.get("token", "")) for entry in content]
    match = _LABEL_VALUE.search("".join(tokens))
    if match is None:
        return None
    start = 0
    for index, token in enumerate(tokens):
        if start + len(token) > match.end():
            return index, token[: match.end() - start]
        start += len(token)
    return None


def _renormalised_labels(alternatives: Sequence[dict[str, Any]], before: str) -> dict[str, float] | None:
    mass: dict[str, list[float]] = {}
    for alternative in alternatives:
        token = str(alternative.get("token", ""))
        label = _label_of(token[len(before):]) if token.startswith(before) else None
        if label is not None:
            mass.setdefault(label, []).append(float(alternative["logprob"]))
    if set(mass) != set(LABELS):
        return None
    totals = {label: float(logsumexp(values)) for label, values in mass.items()}
    norm = float(logsumexp(list(totals.values())))
    return {label: value - norm for label, value in totals.items()}


def _label_of(token: str) -> str | None:
    piece = token.strip().strip('"').lower()
    matches = [label for label in LABELS if piece and label.startswith(piece)]
    return matches[0] if len(matches) == 1 else None


def to_answer(prediction: Any) -> Answer:
    """A program's prediction as an Answer (failures stay failures)."""
    failure = getattr(prediction, "failure", None)
    if failure:
        return Answer.failed(failure, raw=getattr(prediction, "raw", None))
    label, confidence = prediction.label, float(prediction.confidence)
    if not 0.0 <= confidence <= 1.0:  # an API model's answer the schema did not bound: counted, not scored
        return Answer.failed(f"range: confidence {confidence} outside [0, 1]", raw=getattr(prediction, "raw", None))
    p_positive = {"stated": stated_p_positive(label, confidence)}
    label_lp = label_log_probs(getattr(prediction, "logprobs", None))
    if label_lp is not None:
        p_positive["logprob"] = math.exp(label_lp["positive"])
    return Answer(label=label, confidence=confidence, p_positive=p_positive,
                  info={"label_logprobs": label_lp} if label_lp else {})


POLARITY_VALUES = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}


def polarity_importances(pairs: Sequence[Sequence[Any]], logprobs: Any, value_mode: str) -> list[list[Any]]:
    """A polarity explanation as numeric importances: P(positive) - P(negative) at each word's slot where
    ``value_mode`` is ``expected`` and the slots' readings came back (embedded models), else -1 / 0 / 1 from
    the written word. A word outside the three is kept as written (a range violation for the aligner).

    >>> polarity_importances([["good", "positive"], ["film", "neutral"]], None, "sample")
    [['good', 1.0], ['film', 0.0]]
    """
    readings = _option_readings(logprobs, set(POLARITY_VALUES))
    expected = value_mode == "expected" and len(readings) == len(pairs)
    out = []
    for i, pair in enumerate(pairs):
        word = pair[1] if len(pair) > 1 else None
        if expected:
            p = {option: math.exp(lp) for option, lp in readings[i].items()}
            out.append([pair[0], p.get("positive", 0.0) - p.get("negative", 0.0)])
        else:
            out.append([pair[0], POLARITY_VALUES.get(word, word)])
    return out


def _option_readings(logprobs: Any, options: set[str]) -> list[dict[str, float]]:
    """The slots, in answer order, whose alternatives are exactly ``options`` (the embedded engine's readings)."""
    content = (logprobs or {}).get("content") if isinstance(logprobs, dict) else None
    readings = []
    for entry in content or []:
        alternatives = {str(t.get("token")): float(t["logprob"]) for t in entry.get("top_logprobs") or []}
        if set(alternatives) == options:
            readings.append(alternatives)
    return readings


def to_attribution(prediction: Any, review: str) -> Attribution | None:
    """The prediction's explanation in the review's token positions, or None if it has none."""
    if getattr(prediction, "failure", None):
        return None
    tokens = tokenize(review)
    if getattr(prediction, "explanation", None) is not None:
        pairs = [list(p) for p in prediction.explanation]
        if any(len(p) > 1 and isinstance(p[1], str) for p in pairs):
            pairs = polarity_importances(pairs, getattr(prediction, "logprobs", None),
                                         getattr(prediction, "value_mode", "sample"))
        return align_full(tokens, pairs)
    if getattr(prediction, "top_words", None) is not None:
        return align_topk(tokens, prediction.top_words, getattr(prediction, "top_k", None) or topk_size(len(tokens)))
    return None
