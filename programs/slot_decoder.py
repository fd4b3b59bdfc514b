"""Skeleton ("slot") decoding of JSON answers for in-process models.

A JSON schema whose shape is fixed up to a few choices compiles into a *skeleton*: fixed text
(keys, punctuation, the review's own tokens) that is teacher-forced, and *slots* where the model
chooses among a finite set of options (an enum value, a word of the review, a number on a decimal
grid). At every slot the exact probability of every option is computed by walking the options'
token trie, renormalised over what the schema allows (the constrained distribution), so:

- the answer is valid by construction, range included;
- the label's log-probabilities are read in the same pass that decodes the answer;
- a number can be read as its expected value over the grid, not only its argmax;
- fixed text is evaluated in batches with the KV cache of everything before it reused.

Schemas outside this family return ``None`` from :func:`compile_schema`; the engine then falls back
to llama.cpp's general grammar.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

# Bumped whenever what the engine returns for the same request changes (text or logprobs), so
# response caches keyed by the request (DSPy's, the probe's) never serve answers made the old way.
DECODER_VERSION = "3"

UNSIGNED_GRID = tuple(f"{i / 10:.1f}" for i in range(11))
SIGNED_GRID = tuple(f"-{i / 10:.1f}" for i in range(10, 0, -1)) + UNSIGNED_GRID


@dataclass(frozen=True)
class Fixed:
    text: str


@dataclass(frozen=True)
class Slot:
    """A choice among options. ``kind`` is "enum", "number" or "word"; slots sharing a ``group``
    exclude options already chosen in that group (top-k words are distinct)."""

    kind: str
    options: tuple[str, ...]
    closing: str = ""  # text forced right after the option, included in its tokens (keeps options prefix-free)
    group: int | None = None


Segment = Fixed | Slot


def compile_schema(schema: dict[str, Any]) -> list[Segment] | None:
    """Skeleton for a schema, or None when the schema is outside the fixed-shape family.

    >>> [type(s).__name__ for s in compile_schema({"type": "object", "properties": {
    ...     "label": {"enum": ["negative", "positive"]}}, "required": ["label"]})]
    ['Fixed', 'Slot', 'Fixed']
    """
    segments: list[Segment] = []
    groups = iter(range(1_000_000))
    if not _compile(schema, segments, groups):
        return None
    merged: list[Segment] = []
    for segment in segments:
        if isinstance(segment, Fixed) and merged and isinstance(merged[-1], Fixed):
            merged[-1] = Fixed(merged[-1].text + segment.text)
        else:
            merged.append(segment)
    return merged


def _compile(schema: dict[str, Any], out: list[Segment], groups: Any) -> bool:
    kind = schema.get("type")
    if "const" in schema and isinstance(schema["const"], str):
        out.append(Fixed(json.dumps(schema["const"], ensure_ascii=False)))
        return True
    if "enum" in schema and all(isinstance(v, str) for v in schema["enum"]) and schema["enum"]:
        out.append(Fixed('"'))
        out.append(Slot("enum", tuple(json.dumps(v, ensure_ascii=False)[1:-1] for v in schema["enum"]), closing='"'))
        return True
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        if high == 1 and low in (0, -1):
            out.append(Slot("number", SIGNED_GRID if low == -1 else UNSIGNED_GRID))
            return True
        return False
    if kind == "object":
        properties = schema.get("properties") or {}
        if not properties or set(schema.get("required", [])) != set(properties):
            return False
        out.append(Fixed("{"))
        for i, (name, sub) in enumerate(properties.items()):
            out.append(Fixed((", " if i else "") + json.dumps(name, ensure_ascii=False) + ": "))
            if not _compile(sub, out, groups):
                return False
        out.append(Fixed("}"))
        return True
    if kind == "array":
        items = schema.get("prefixItems")
        if items is not None:
            if schema.get("items") not in (None, False):
                return False
            out.append(Fixed("["))
            for i, sub in enumerate(items):
                if i:
                    out.append(Fixed(", "))
                if not _compile(sub, out, groups):
                    return False
            out.append(Fixed("]"))
            return True
        item = schema.get("items") or {}
        count = schema.get("minItems")
        if count == 0 and schema.get("maxItems") == 0:  # e.g. the top-k words of an empty review
            out.append(Fixed("[]"))
            return True
        if count is None or count != schema.get("maxItems") or count < 1 or "enum" not in item:
            return False
        group = next(groups) if schema.get("uniqueItems") else None
        options = tuple(json.dumps(v, ensure_ascii=False)[1:-1] for v in item["enum"])
        if group is not None and count > len(options):
            return False
        out.append(Fixed("["))
        for i in range(count):
            out.append(Fixed(', "' if i else '"'))
            out.append(Slot("word", options, closing='"', group=group))
        out.append(Fixed("]"))
        return True
    return False


@dataclass(frozen=True)
class Reading:
    """What the model's distribution said at one slot."""

    kind: str
    options: tuple[str, ...]
    logprobs: tuple[float, ...]  # renormalised over the allowed options (NaN for excluded ones)
    chosen: int

    @property
    def expected(self) -> float | None:
        """Probability-weighted value of a number slot."""
        return expected_value(self.options, self.logprobs) if self.kind == "number" else None


def expected_value(options: Sequence[str], logprobs: Sequence[float]) -> float:
    """Probability-weighted value of numeric options (NaN log-probabilities: excluded options)."""
    p = np.exp(np.nan_to_num(np.asarray(logprobs, dtype=np.float64), nan=-np.inf))
    return float(np.dot(p, [float(o) for o in options]) / p.sum())


LogitsFn = Callable[[Sequence[int]], np.ndarray]


def option_logprobs(logits_at: LogitsFn, context: Sequence[int], options: Sequence[Sequence[int]],
                    allowed: Sequence[bool]) -> np.ndarray:
    """log P(option | context) under the constraint that only allowed options may follow.

    Walks the options' token trie; a node with one allowed continuation costs nothing (its
    constrained probability is 1), every branching node costs one evaluation of its prefix.
    Options must be prefix-free (a closing quote or fixed-width numbers make them so).
    """
    result = np.full(len(options), np.nan)
    context = list(context)

    def walk(prefix: list[int], members: list[int], depth: int, acc: float) -> None:
        for i in members:
            if len(options[i]) == depth:
                result[i] = acc
        pending = [i for i in members if len(options[i]) > depth]
        if not pending:
            return
        next_tokens = sorted({options[i][depth] for i in pending})
        if len(next_tokens) == 1:
            step = {next_tokens[0]: 0.0}
        else:
            # renormalised over the allowed tokens only: the rest of the vocabulary cancels out
            raw = np.asarray(logits_at(context + prefix)[next_tokens], dtype=np.float64)
            scores = raw - logsumexp(raw)
            step = dict(zip(next_tokens, scores.tolist(), strict=True))
        for token in next_tokens:
            walk(prefix + [token], [i for i in pending if options[i][depth] == token], depth + 1, acc + step[token])

    walk([], [i for i, ok in enumerate(allowed) if ok], 0, 0.0)
    return result


def decode(segments: Sequence[Segment], prompt: Sequence[int], *, tokenize: Callable[[str], list[int]],
           logits_at: LogitsFn, choose: Callable[[Slot, np.ndarray], int]) -> tuple[str, list[Reading]]:
    """Decode a skeleton after ``prompt``: fixed text is forced, each slot is read and chosen."""
    context = list(prompt)
    text: list[str] = []
    readings: list[Reading] = []
    used: dict[int, set[int]] = {}
    known: dict[str, list[int]] = {}  # option tokens: a 21-value grid recurs at every number slot

    def tokens_of(option: str) -> list[int]:
        if option not in known:
            known[option] = tokenize(option)
        return known[option]

    for segment in segments:
        if isinstance(segment, Fixed):
            context += tokenize(segment.text)
            text.append(segment.text)
            continue
        taken = used.setdefault(segment.group, set()) if segment.group is not None else set()
        allowed = [i not in taken for i in range(len(segment.options))]
        tokenized = [tokens_of(option + segment.closing) for option in segment.options]
        logprobs = option_logprobs(logits_at, context, tokenized, allowed)
        chosen = choose(segment, logprobs)
        taken.add(chosen)
        context += tokenized[chosen]
        text.append(segment.options[chosen] + segment.closing)
        readings.append(Reading(segment.kind, segment.options, tuple(logprobs.tolist()), chosen))
    return "".join(text), readings


@dataclass(frozen=True)
class DecodeOptions:
    """Per-request decoding options, carried in the request's ``metadata`` (strings, as OpenAI's is).

    ``value_mode``: ``sample`` writes the chosen grid value; ``expected`` writes each number slot's
    probability-weighted value. ``enum_bias``: log-probability offsets added before choosing to the
    options of every enum slot whose options are exactly its keys (how calibrated label decisions
    are applied in the decoding pass; a polarity slot, which also offers "positive", is left alone).
    """

    value_mode: str = "sample"
    enum_bias: dict[str, float] | None = None

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None) -> DecodeOptions:
        metadata = metadata or {}
        mode = metadata.get("value_mode", "sample")
        if mode not in ("sample", "expected"):
            raise ValueError(f"value_mode must be sample or expected, got {mode!r}")
        bias = json.loads(metadata["enum_bias"]) if metadata.get("enum_bias") else None
        return cls(mode, bias)

    def biased(self, slot: Slot, logprobs: np.ndarray) -> np.ndarray:
        """``logprobs`` of ``slot`` with ``enum_bias`` applied when the slot is the one it names."""
        if slot.kind != "enum" or not self.enum_bias or set(slot.options) != set(self.enum_bias):
            return logprobs
        return logprobs + np.array([self.enum_bias[o] for o in slot.options])

    def to_metadata(self) -> dict[str, str]:
        out = {"value_mode": self.value_mode, "decoder": DECODER_VERSION}
        if self.enum_bias:
            out["enum_bias"] = json.dumps(self.enum_bias)
        return out


def rewrite_expected(segments: Sequence[Segment], readings: Sequence[Reading]) -> str:
    """The decoded text with every number slot replaced by its expected value (3 decimals)."""
    values = iter(readings)
    text: list[str] = []
    for segment in segments:
        if isinstance(segment, Fixed):
            text.append(segment.text)
            continue
        reading = next(values)
        option = f"{reading.expected:.3f}" if reading.kind == "number" else reading.options[reading.chosen]
        text.append(option + segment.closing)
    return "".join(text)


def readings_to_logprobs(segments: Sequence[Segment], readings: Sequence[Reading]) -> tuple[Any, ...]:
    """The decoded answer as lm15 token log-probabilities, one entry per piece of the skeleton in order.

    Fixed text is an entry of its own (log-probability 0: it was forced; no alternatives); a slot is
    its chosen option with every allowed option as an alternative, then its closing text as fixed.
    Concatenated, the entries spell the answer (numbers as their grid option), as an API's tokens
    do, so one reader finds a field by its place in the text for both (a review word such as "n't"
    in an E-P explanation is never mistaken for the label). This is how readings reach
    ``prediction.logprobs`` through DSPy when a caller asks for logprobs.
    """
    from dspy.lm15 import TokenLogprob, TopLogprob

    values = iter(readings)
    out = []
    for segment in segments:
        if isinstance(segment, Fixed):
            out.append(TokenLogprob(token=segment.text, logprob=0.0))
            continue
        reading = next(values)
        top = tuple(TopLogprob(token=o, logprob=lp) for o, lp in zip(reading.options, reading.logprobs, strict=True)
                    if not np.isnan(lp))
        out.append(TokenLogprob(token=reading.options[reading.chosen], logprob=reading.logprobs[reading.chosen],
                                top=top))
        if segment.closing:
            out.append(TokenLogprob(token=segment.closing, logprob=0.0))
    return tuple(out)


def greedy(_: Slot, logprobs: np.ndarray) -> int:
    return int(np.nanargmax(logprobs))


def carry_expected(choose: Callable[[Slot, np.ndarray], int]) -> Callable[[Slot, np.ndarray], int]:
    """In ``expected`` mode, a number slot continues with the grid value nearest its expected value.

    What follows (E-P's label, later importances) is then conditioned on the explanation as reported
    (to the grid's 0.1), not on an argmax the report never shows. Other slots use ``choose``.
    """
    def chooser(slot: Slot, logprobs: np.ndarray) -> int:
        if slot.kind != "number":
            return choose(slot, logprobs)
        grid = np.array([float(o) for o in slot.options])
        return int(np.argmin(np.abs(grid - expected_value(slot.options, logprobs))))
    return chooser


def sampler(temperature: float, rng: np.random.Generator) -> Callable[[Slot, np.ndarray], int]:
    """Sample each slot from its constrained distribution at ``temperature``."""
    def choose(_: Slot, logprobs: np.ndarray) -> int:
        scaled = np.nan_to_num(logprobs, nan=-np.inf) / temperature
        p = np.exp(scaled - scaled.max())
        return int(rng.choice(len(p), p=p / p.sum()))
    return choose
