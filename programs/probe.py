"""The probe: what perturbation-based explainers and metrics ask a model about a (perturbed) text.

``probe.answers(texts) -> list[Answer]``, in order; duplicate texts are asked once, and every
answer goes through the persistent cache keyed by backend, model, program fingerprint, mode and
text. Modes:

- ``same-program``: the study's protocol, the text goes through the same P-E/E-P program;
- ``predict-only``: the prediction-only program (same LM), cheaper and never needs an explanation;
- ``logprob``: the prediction-only prompt scored in one forward pass at the label slot (embedded
  models); API models answer through ``predict-only`` and their label logprobs.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import dspy

from programs.lean_adapter import default_adapter
from programs.lm import describe_lm, is_embedded
from programs.probe_cache import ProbeCache, cache_key
from programs.readout import to_answer
from programs.self_explain import SentimentProgram
from programs.signatures import SIGNATURES
from programs.slot_decoder import DECODER_VERSION
from programs.types import LABELS, Answer

PROBE_MODES = ("same-program", "predict-only", "logprob")


class Probe(Protocol):
    """What explainers and metrics ask: answers to texts, in order (None: a recorded probe never saw the text).

    ``p_source`` names the P(positive) its answers carry for the metrics (``logprob`` or ``stated``);
    ``fingerprint`` identifies the decision function behind the answers."""

    fingerprint: str
    p_source: str

    def answers(self, texts: Sequence[str]) -> list[Answer | None]: ...


@dataclass
class ProbeStats:
    requested: int = 0
    unique: int = 0
    cache_hits: int = 0
    model_calls: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k != "lock"}


def program_fingerprint(program: dspy.Module) -> str:
    """Changes whenever what the model sees changes: class, settings, instructions and demos."""
    state = {"class": type(program).__name__, "name": getattr(program, "name", None),
             "value_mode": getattr(program, "value_mode", None), "k_fraction": getattr(program, "k_fraction", None),
             "state": program.dump_state()}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ProgramProbe:
    """Answers from a live LM through a selfx program (or its label slot), cached."""

    def __init__(self, program: SentimentProgram, lm: Any, *, mode: str = "same-program",
                 cache: ProbeCache | None = None, adapter: dspy.Adapter | None = None) -> None:
        if mode not in PROBE_MODES:
            raise ValueError(f"unknown probe mode {mode!r}; choose one of {list(PROBE_MODES)}")
        self.lm = lm
        self.mode = mode
        self.cache = cache
        self.adapter = adapter or default_adapter(lm)
        self.program = program if mode == "same-program" else SentimentProgram("P", value_mode=program.value_mode)
        lm_id = describe_lm(lm)
        self._key_parts = (lm_id["backend"], lm_id["model"], program_fingerprint(self.program), mode,
                           type(self.adapter).__name__)
        if mode != "logprob" and is_embedded(lm):
            # decoded answers depend on the embedded decoder's version; label-slot readings do not
            self._key_parts += (f"decoder-{DECODER_VERSION}",)
        self.fingerprint = cache_key(*self._key_parts)[:16]
        self.stats = ProbeStats()

    @property
    def p_source(self) -> str:
        """Label-slot readings carry log-probabilities; generated answers their stated confidence."""
        return "logprob" if self.mode == "logprob" else "stated"

    def answers(self, texts: Sequence[str]) -> list[Answer]:
        unique = list(dict.fromkeys(texts))
        keys = {text: cache_key(*self._key_parts, text) for text in unique}
        cached = self.cache.get_many(keys.values()) if self.cache is not None else {}
        found = {text: cached[key] for text, key in keys.items() if key in cached}
        missing = [text for text in unique if text not in found]
        fresh = {text: self._ask(text) for text in missing}
        if self.cache is not None and fresh:
            self.cache.put_many({keys[text]: answer for text, answer in fresh.items()})
        found.update(fresh)
        with self.stats.lock:
            self.stats.requested += len(texts)
            self.stats.unique += len(unique)
            self.stats.cache_hits += len(unique) - len(missing)
            self.stats.model_calls += len(missing)
            self.stats.failures += sum(not a.ok for a in fresh.values())
        return [found[text] for text in texts]

    def _ask(self, text: str) -> Answer:
        if self.mode == "logprob" and is_embedded(self.lm):
            return self._label_slot(text)
        with dspy.context(lm=self.lm, adapter=self.adapter):
            return to_answer(self.program(review=text))

    def _label_slot(self, text: str) -> Answer:
        messages = self.adapter.format(SIGNATURES["P"], self.program.predict.demos, {"review": text})
        # the same reading the slot decoder makes: label options renormalised at the label slot
        logprobs = self.lm.engine.slot_logprobs(messages, '{"label": "', list(LABELS))
        p = {label: math.exp(lp) for label, lp in logprobs.items()}
        label = max(p, key=p.get)
        return Answer(label=label, confidence=p[label], p_positive={"logprob": p["positive"]},
                      info={"label_logprobs": logprobs})
