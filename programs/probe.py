"""The probe: what perturbation-based explainers and metrics ask a model about a (perturbed) text.

A program's probe is *that program*: its instructions, demos, adapter, decision rule and calibration bias,
so a faithfulness number is about the decision that was explained (the study re-prompted the same
configuration for every perturbed text, digest section 1.5). ``probe.answers(texts) -> list[Answer]``, in
order; duplicate texts are asked once, and every answer goes through the persistent cache under a key
holding everything that defines the decision function. Modes:

- ``logprob`` (default): the program's label slot read in one forward pass, embedded models only. Exact
  for programs that answer the label first (P, P-E). For full E-P, whose label follows its explanation,
  the label is read after a *neutral explanation* forced in (every word 0.0, or ``neutral``): a named
  approximation (``approximation`` says which), one pass instead of a decoded explanation per text. E-P
  top-k is decoded (its k words are cheap). API models run the program and read its label logprobs; one that
  answers its label first (P-E, P-E top-k) is stopped where the field after its label and stated confidence
  begins (``through-label``): the same prompt, schema and greedy tokens up to the label, so the same decision,
  without paying for an explanation per perturbed text.
- ``same-program``: the program decoded in full for every text (E-P exact; the study's protocol), its
  stated confidence as the probability.
- ``zero-shot``: the zero-shot prediction-only program's label slot, whatever was explained: the
  decision function selfx used before, kept to compare against.

Decoded answers (API models, ``same-program``) keep up to ``concurrency`` requests in flight; the answers
do not depend on it (same texts, same order).

On embedded models the missing texts of one call are read in one batch: contexts in token order, each
evaluated from its longest common prefix with what the KV cache holds (``LlamaCppEngine.read_slots``).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import dspy
from dspy.utils.exceptions import (
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
    LMUnexpectedError,
)

from programs.lean_adapter import LeanAdapter, default_adapter
from programs.lm import describe_lm, is_embedded
from programs.probe_cache import ProbeCache, cache_key
from programs.readout import to_answer
from programs.self_explain import SentimentProgram
from programs.signatures import RESTATED
from programs.slot_decoder import DECODER_VERSION
from programs.types import LABELS, Answer, first_line

PROBE_MODES = ("logprob", "same-program", "zero-shot")
NEUTRAL_EXPLANATION = "neutral-explanation"
THROUGH_LABEL = "through-label"
DECODED = ("decoded", THROUGH_LABEL)  # readings that run the program: what they store, its rule has decided


class Probe(Protocol):
    """What explainers and metrics ask: answers to texts, in order (None: a recorded probe never saw the text).

    ``p_source`` names the P(positive) its answers carry for the metrics (``logprob`` or ``stated``);
    ``fingerprint`` identifies the decision function behind the answers."""

    fingerprint: str
    p_source: str

    def answers(self, texts: Sequence[str]) -> list[Answer | None]: ...


CHUNK = 256  # texts asked and stored per cache transaction
# errors left after the client's own retries that fail one text, not the study (auth and config errors still raise)
TRANSIENT = (LMRateLimitError, LMServerError, LMTimeoutError, LMTransportError, LMUnexpectedError)


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


class _Silent:
    def update(self, n: int = 1) -> None:
        """No progress shown."""


def program_fingerprint(program: dspy.Module, *, decision: bool = True) -> str:
    """Changes whenever the decision changes: class, settings, instructions, demos, decision rule, calibration.
    ``decision=False`` leaves out the decision rule, its calibration and E-P's sampled explanations: what the
    model reads at the label slot (after the answer up to it, forced) before the rule is applied."""
    state = {"class": type(program).__name__, "name": getattr(program, "name", None),
             "value_mode": getattr(program, "value_mode", None), "k_fraction": getattr(program, "k_fraction", None),
             "state": program.dump_state()}
    if not decision and "selfx" in state["state"]:
        state["state"]["selfx"] = {k: v for k, v in state["state"]["selfx"].items()
                                   if k not in ("decision", "calibration", "explanation_samples")}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


def calibrated(answer: Answer, bias: float) -> Answer:
    """An answer whose label reading is shifted by the program's calibration bias: the decided label and the
    P(positive) of its decision rule (the raw readings stay in ``info``). A slot reading's confidence is the
    probability of the decided label; a decoded answer keeps the confidence it stated."""
    if not answer.ok or answer.label_log_odds is None:
        return answer
    odds = answer.label_log_odds + bias
    p = 1.0 / (1.0 + math.exp(-odds))
    label = "positive" if odds > 0 else "negative"
    confidence = answer.confidence if answer.confidence is not None else max(p, 1.0 - p)
    return Answer(label=label, confidence=confidence, p_positive={**answer.p_positive, "logprob": p},
                  raw=answer.raw, info={**answer.info, "bias": bias})


class ProgramProbe:
    """Answers from a live LM through a selfx program (or its label slot), cached."""

    def __init__(self, program: SentimentProgram, lm: Any, *, mode: str = "logprob",
                 cache: ProbeCache | None = None, adapter: dspy.Adapter | None = None, concurrency: int = 1,
                 progress: Callable[[int, str], AbstractContextManager[Any]] | None = None) -> None:
        if mode not in PROBE_MODES:
            raise ValueError(f"unknown probe mode {mode!r}; choose one of {list(PROBE_MODES)}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.lm = lm
        self.mode = mode
        self.concurrency = concurrency
        # progress(total, description) -> a context whose value has update(n): a bar for long probe rounds
        self.progress = progress or (lambda total, desc: nullcontext(_Silent()))
        self.cache = cache
        self.adapter = adapter or default_adapter(lm)
        self.program = program if mode != "zero-shot" else SentimentProgram("P", value_mode=program.value_mode)
        first = next(iter(self.program.predict.signature.output_fields))
        embedded = is_embedded(lm)
        # how an answer is made: a label-slot reading ("slot"), after a forced neutral explanation, decoded up to
        # the label (API models, label first), or decoded in full
        self._answer_adapter = self.adapter
        if embedded and mode != "same-program" and self.program.name != "EP-topk":
            self.reading = "slot" if first == "label" else NEUTRAL_EXPLANATION
        elif mode != "same-program" and _fields_after_label(self.program.predict.signature) \
                and type(self.adapter) in _THROUGH_LABEL:
            self.reading = THROUGH_LABEL
            self._answer_adapter = _THROUGH_LABEL[type(self.adapter)]()
        else:
            self.reading = "decoded"
        lm_id = describe_lm(lm)
        parts = (type(self.adapter).__name__, self.reading, *((f"decoder-{DECODER_VERSION}",) if embedded else ()))
        # a slot reading is the model's, before the decision rule adds its bias: it is cached without the rule, so
        # programs that differ only in rule or calibration batch (20 or 200 sentences, trial after trial) share it;
        # a decoded answer was decided by the program (an embedded P-E writes its explanation after the decided
        # label; an API program's label is re-decided from its log-probabilities), so it keeps the rule in its key
        self._key_parts = (lm_id["backend"], lm_id["model"],
                           program_fingerprint(self.program, decision=self.reading in DECODED), mode, *parts)
        self.fingerprint = cache_key(lm_id["backend"], lm_id["model"], program_fingerprint(self.program), mode,
                                     *parts)[:16]
        self.stats = ProbeStats()
        self._memo: dict[str, Answer] = {}

    @property
    def p_source(self) -> str:
        """Label-slot readings carry log-probabilities; decoded answers in ``same-program`` mode their stated
        confidence (the study's protocol)."""
        return "stated" if self.mode == "same-program" else "logprob"

    @property
    def approximation(self) -> str | None:
        """The name of the approximation behind the answers, or None where they are the program's exact decision."""
        return NEUTRAL_EXPLANATION if self.reading == NEUTRAL_EXPLANATION else None

    def describe(self) -> dict[str, Any]:
        """What a figure measured through this probe used, for reports and MLflow."""
        return {"probe_mode": self.mode, "probe_program": self.program.name, "probe_reading": self.reading,
                "probe_exact": self.approximation is None, "probe_fingerprint": self.fingerprint}

    def answers(self, texts: Sequence[str]) -> list[Answer]:
        unique = list(dict.fromkeys(texts))
        unseen = [text for text in unique if text not in self._memo]
        keys = {text: cache_key(*self._key_parts, text) for text in unseen}
        cached = self.cache.get_many(keys.values()) if self.cache is not None and keys else {}
        found = {text: cached[key] for text, key in keys.items() if key in cached}
        self._memo.update(found)
        missing = [text for text in unseen if text not in found]
        failures = 0
        with self.progress(len(missing), f"probe {self.program.name}") as bar:
            # asked and stored chunk by chunk: a killed process loses at most one chunk of answers
            for start in range(0, len(missing), CHUNK):
                chunk = missing[start:start + CHUNK]
                fresh = dict(zip(chunk, self._ask(chunk, bar.update), strict=True))
                if self.cache is not None:
                    # failures are not stored: a rerun asks again (a timeout or a 500 may not repeat)
                    self.cache.put_many({keys[text]: answer for text, answer in fresh.items() if answer.ok})
                self._memo.update(fresh)
                failures += sum(not a.ok for a in fresh.values())
        with self.stats.lock:
            self.stats.requested += len(texts)
            self.stats.unique += len(unique)
            self.stats.cache_hits += len(unique) - len(missing)
            self.stats.model_calls += len(missing)
            self.stats.failures += failures
        # answers are stored as read and decided on the way out (``calibrated`` recomputes the label from
        # the raw label log-probabilities: an answer stored decided by an earlier version decides the same)
        bias = self.program.label_bias
        return [calibrated(self._memo[text], bias) for text in texts]

    def _ask(self, texts: Sequence[str], update: Callable[[int], Any]) -> list[Answer]:
        if self.reading in DECODED:
            return self._decoded(texts, update)
        return self._slot_readings(texts, update)

    def _slot_readings(self, texts: Sequence[str], update: Callable[[int], Any]) -> list[Answer]:
        engine = self.lm.engine
        signature, demos = self.program.predict.signature, self.program.predict.demos
        contexts = [engine.prompt_tokens(self.adapter.format(signature, demos, self.program._inputs(text)))
                    + engine.tokenize_text(self.answer_prefix(text)) for text in texts]
        out = []
        for reading in engine.read_slots(contexts, list(LABELS), progress=update):
            logprobs = dict(zip(LABELS, reading.tolist(), strict=True))
            out.append(Answer(label=max(logprobs, key=logprobs.get), confidence=None,
                              p_positive={"logprob": math.exp(logprobs["positive"])},
                              info={"label_logprobs": logprobs}))
        return out

    def _decoded(self, texts: Sequence[str], update: Callable[[int], Any]) -> list[Answer]:
        """The program run on each text; up to ``concurrency`` requests in flight (API servers batch them), answers
        in input order whatever order they arrive in."""
        def one(text: str) -> Answer:
            try:
                with dspy.context(lm=self.lm, adapter=self._answer_adapter):
                    answer = to_answer(self.program(review=text))
            except TRANSIENT as exc:
                # the client has already retried (429, 5xx, timeouts): a counted failure, never a default label
                answer = Answer.failed(f"transport: {first_line(exc)}")
            update(1)
            return answer

        if self.concurrency == 1 or len(texts) == 1:
            return [one(text) for text in texts]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, texts))

    def answer_prefix(self, text: str) -> str:
        """The answer text up to the label slot, as the skeleton decoder writes it."""
        if self.reading == "slot":
            return '{"label": "'
        neutral = self.program.neutral_value
        answer: dict[str, Any] = {"explanation": [[token, neutral] for token in text.split()]}
        if RESTATED in self.program.predict.signature.output_fields:
            answer[RESTATED] = text
        return json.dumps(answer, ensure_ascii=False)[:-1] + ', "label": "'


def _fields_after_label(signature: type[dspy.Signature]) -> list[str]:
    """The output fields after a label-first answer's label and stated confidence (P-E's explanation, P-E top-k's
    words); none when the label is not first or nothing follows it."""
    names = list(signature.output_fields)
    head = 2 if names[:2] == ["label", "confidence"] else 1
    return names[head:] if names[:1] == ["label"] else []


class _ThroughLabelMixin:
    """A JSON-answer adapter whose request stops where the key of the field after the label (and stated
    confidence) begins; the answer so far is closed and parsed as those leading fields (the rest are None)."""

    def __call__(self, lm: Any, lm_kwargs: dict[str, Any], signature: type[dspy.Signature],
                 demos: list[dict[str, Any]], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        stop = json.dumps(_fields_after_label(signature)[0])
        return super().__call__(lm, {**lm_kwargs, "stop": [stop]}, signature, demos, inputs)  # type: ignore[misc]

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        head = signature
        for name in _fields_after_label(signature):
            head = head.delete(name)
        return super().parse(head, completion.rstrip().rstrip(",") + "}")  # type: ignore[misc]


class _JSONThroughLabel(_ThroughLabelMixin, dspy.JSONAdapter):
    pass


class _LeanThroughLabel(_ThroughLabelMixin, LeanAdapter):
    pass


_THROUGH_LABEL: dict[type, type[dspy.Adapter]] = {dspy.JSONAdapter: _JSONThroughLabel, LeanAdapter: _LeanThroughLabel}
