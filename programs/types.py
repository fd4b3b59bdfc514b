"""Small frozen value types that every layer speaks (data -> programs -> metrics -> experiments)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

LABELS: tuple[str, str] = ("negative", "positive")


class InputError(ValueError):
    """Bad input the user can fix (a file, a flag, a config value, a spec): the CLI prints it in one line and
    exits 2. Every other exception is a failure of the job (exit 1)."""


class ContextOverflow(ValueError):
    """A prompt (with its answer so far) does not fit the model's context window."""


def first_line(exc: BaseException, limit: int | None = 300) -> str:
    """An exception's message as one line for a failure record or an error line ("" when it has none).

    >>> first_line(ValueError("bad\\nmore")), first_line(TimeoutError())
    ('bad', '')
    """
    lines = str(exc).splitlines()
    return lines[0][:limit] if lines else ""


def database_url(url: str) -> str:
    """A database URL with the driver selfx installs: ``postgresql://`` means psycopg 3 (SQLAlchemy would look for
    psycopg2).

    >>> database_url("postgresql://u@h/db"), database_url("sqlite:///x.db")
    ('postgresql+psycopg://u@h/db', 'sqlite:///x.db')
    """
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def masked_url(url: str) -> str:
    """A database URL as it may be shown or logged: never its password.

    >>> masked_url("postgresql+psycopg://selfx:secret@db:5432/optuna")
    'postgresql+psycopg://selfx:***@db:5432/optuna'
    """
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def tokenize(text: str) -> tuple[str, ...]:
    """The study's tokens: whitespace tokens of the review (repeated words are distinct positions)."""
    return tuple(text.split())


def topk_size(n_tokens: int, fraction: float = 0.2) -> int:
    """The study's k = max(1, int(0.2 n)), never more than the review's tokens.

    >>> topk_size(4), topk_size(20), topk_size(39), topk_size(3, 2.0), topk_size(0)
    (1, 4, 7, 3, 0)
    """
    return min(n_tokens, max(1, int(fraction * n_tokens)))


@dataclass(frozen=True)
class Example:
    """One review with its gold label (1 = positive, 0 = negative, None = unlabelled)."""

    id: str
    text: str
    label: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ValueError(f"example {self.id!r}: review must be a string, got {type(self.text).__name__}")
        if not self.text.strip():
            raise ValueError(f"example {self.id!r}: review is empty")
        if self.label not in (None, 0, 1):
            raise ValueError(f"example {self.id!r}: label must be 0 or 1, got {self.label!r}")

    @property
    def tokens(self) -> tuple[str, ...]:
        return tokenize(self.text)


@dataclass(frozen=True)
class Answer:
    """What a model said about one text.

    A failed answer keeps the raw reply and a reason; its label and probabilities are None, never a
    default such as the study's (0, 0.5).
    ``p_positive`` holds P(positive) by source: ``"stated"`` (confidence if positive, else
    1 - confidence) and, where the backend has them, ``"logprob"`` (label log-probabilities).
    """

    label: str | None
    confidence: float | None = None
    p_positive: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    raw: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.failure is None:
            if self.label not in LABELS:
                raise ValueError(f"label must be one of {LABELS}, got {self.label!r}")
            if self.confidence is not None and not (0.0 <= self.confidence <= 1.0):
                raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")
        for source, p in self.p_positive.items():
            if not (isinstance(p, float) and 0.0 <= p <= 1.0) or math.isnan(p):
                raise ValueError(f"p_positive[{source!r}] must be a float in [0, 1], got {p!r}")

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def label_int(self) -> int | None:
        return None if self.label is None else LABELS.index(self.label)

    @property
    def label_log_odds(self) -> float | None:
        """log P(positive) - log P(negative) as the model read them at the label slot (no calibration
        bias), or None where the answer carries no label log-probabilities."""
        raw = self.info.get("label_logprobs")
        return None if raw is None else raw["positive"] - raw["negative"]

    @classmethod
    def failed(cls, reason: str, raw: str | None = None, **info: Any) -> Answer:
        return cls(label=None, failure=reason, raw=raw, info=info)


def stated_p_positive(label: str, confidence: float) -> float:
    """The study's mapping of a stated (label, confidence) to P(positive)."""
    return float(confidence) if label == "positive" else 1.0 - float(confidence)


@dataclass(frozen=True)
class Attribution:
    """An explanation in the review's token positions.

    ``values``: one importance per position, None where the explainer gave none (missing, never a
    silent 0). ``ranking``: positions from most to least important for explainers that give an
    order rather than values (top-k), else None. ``source``: self, topk, occlusion, lime, lexicon, random.
    """

    values: tuple[float | None, ...]
    source: str
    ranking: tuple[int, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.values)
        if self.ranking is not None and any(not 0 <= r < n for r in self.ranking):
            raise ValueError(f"ranking {self.ranking} has positions outside 0..{n - 1}")
        if len(set(self.ranking or ())) != len(self.ranking or ()):
            raise ValueError(f"ranking {self.ranking} repeats a position")

    @property
    def coverage(self) -> float:
        """Share of token positions with a value; for a ranking, share of its words found in the review."""
        if self.ranking is not None:
            return float(self.info.get("matched_share", 1.0))
        return sum(v is not None for v in self.values) / len(self.values) if self.values else 1.0
