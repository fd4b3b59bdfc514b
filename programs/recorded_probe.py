"""The recorded probe: answers from the study's recorded caches (no LM), for ``selfx replay``.

``../shared/data/huang2023/<model>/perturbation_cache_<tag>.jsonl.gz`` holds the model's
(label, confidence) on every text its pipeline queried (originals, deletions, the empty string).
Recorded answers are returned as recorded, the study's (0, 0.5) parse-failure defaults included
(they cannot be told apart from real answers); a ``malformed`` row is returned as a failure.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from functools import cache

from programs.data import DataError, shared_data_dir
from programs.types import LABELS, Answer, InputError, stated_p_positive

REPLAY_MODELS = ("gpt4o", "llama3")
REPLAY_TAGS = {"P-E": "pe", "E-P": "ep", "P": "p"}


@cache
def _load(model: str, tag: str) -> dict[str, Answer]:
    path = shared_data_dir() / "huang2023" / model / f"perturbation_cache_{tag}.jsonl.gz"
    if not path.is_file():
        raise DataError(f"replay cache not found: {path}; the replay backend needs ../shared/data/huang2023")
    answers: dict[str, Answer] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("malformed") or row.get("pred_label") not in (0, 1):
                answers[row["text"]] = Answer.failed("recorded answer is malformed", raw=json.dumps(row))
                continue
            label = LABELS[int(row["pred_label"])]
            confidence = float(row["confidence"])
            answers[row["text"]] = Answer(label=label, confidence=confidence,
                                          p_positive={"stated": stated_p_positive(label, confidence)})
    return answers


class RecordedProbe:
    """Recorded answers of ``model`` (gpt4o, llama3) under the prompt of ``order`` (P-E, E-P, P).

    ``answers`` returns None for a text the study never asked (a miss is not a model failure: the metric is
    not computable and is counted). ``recorded_default_as_failure``: treat a recorded (0, 0.5), the
    study's parse-failure default, as a failure (it cannot be told apart from a genuine answer).
    """

    p_source = "stated"  # the study recorded stated (label, confidence) pairs only

    def __init__(self, model: str, order: str, *, recorded_default_as_failure: bool = False) -> None:
        if model not in REPLAY_MODELS:
            raise InputError(f"no recorded caches for {model!r}; choose one of {list(REPLAY_MODELS)}")
        if order not in REPLAY_TAGS:
            raise ValueError(f"unknown order {order!r}; choose one of {list(REPLAY_TAGS)}")
        self.model, self.order = model, order
        self.recorded_default_as_failure = recorded_default_as_failure
        self.fingerprint = f"replay:{model}:{REPLAY_TAGS[order]}"
        self._answers = _load(model, REPLAY_TAGS[order])

    def answers(self, texts: Sequence[str]) -> list[Answer | None]:
        out: list[Answer | None] = []
        for text in texts:
            answer = self._answers.get(text)
            if self.recorded_default_as_failure and answer is not None and answer.ok and answer.label == "negative" \
                    and answer.confidence == 0.5:
                answer = Answer.failed("recorded (0, 0.5): the study's parse-failure default")
            out.append(answer)
        return out
