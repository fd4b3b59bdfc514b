"""The five sentiment programs as DSPy modules: P, P-E, E-P (full) and P-E, E-P (top-k).

Each returns a ``dspy.Prediction``; a failed answer is a prediction with ``failure`` set and the
raw reply kept (never a default label). ``programs.readout`` turns predictions into value types.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import dspy
from dspy.utils.exceptions import AdapterParseError

from programs.lean_adapter import LeanAdapter
from programs.lm import is_embedded
from programs.readout import label_log_probs, with_label_log_odds
from programs.signatures import SIGNATURES, signature, with_restatement
from programs.slot_decoder import DecodeOptions
from programs.types import ContextOverflow, first_line, tokenize, topk_size

if TYPE_CHECKING:
    from programs.probe_cache import ProbeCache

PROGRAM_NAMES = tuple(SIGNATURES)
ValueMode = Literal["sample", "expected"]
DECISIONS = ("generated", "logprob", "contextual", "batch")
CONTENT_FREE = ("N/A", "", "[MASK]")  # Zhao et al. (2021) contextual calibration inputs


def explains_first(name: str) -> bool:
    """Whether a program's label follows its explanation (E-P, full or top-k): only such a program can read its
    label over sampled explanations."""
    return name.startswith("EP")


class SentimentProgram(dspy.Module):
    """Classify a review and (for P-E/E-P) explain it.

    Args:
        name: P, PE, EP, PE-topk or EP-topk.
        k_fraction: top-k size as a share of the review's tokens (the study's 0.2).
        value_mode: how the embedded engine reads importances: ``sample`` (the decoded value) or
            ``expected`` (the probability-weighted value at each slot: for ``polarity``,
            P(positive) - P(negative)).
        format: how a full explanation speaks: ``numeric`` (a number in [-1, 1] per token, the study's)
            or ``polarity`` (negative / neutral / positive per token).
        decision: how the label is decided. ``generated``: as decoded; ``logprob``: argmax of the
            label log-probabilities; ``contextual`` / ``batch``: argmax after adding a log-odds bias
            (minus the mean log-odds of content-free inputs, or of a calibration batch) — call
            :meth:`calibrate` first. On embedded models the decided label is forced at the label
            slot, so what follows it (P-E's confidence and explanation) is conditioned on it.
        explanation_samples: E-P only, embedded models: read the label as the mean of its log-odds after
            this many explanations sampled at temperature 1 (self-consistency over explanations; 0: the
            greedy explanation's). The greedy answer, explanation included, is what is returned.
    """

    def __init__(self, name: str = "P", *, k_fraction: float = 0.2, value_mode: ValueMode = "sample",
                 decision: str = "generated", format: str = "numeric", explanation_samples: int = 0) -> None:
        super().__init__()
        if name not in SIGNATURES:
            raise ValueError(f"unknown program {name!r}; choose one of {list(PROGRAM_NAMES)}")
        if value_mode not in ("sample", "expected"):
            raise ValueError(f"value_mode must be sample or expected, got {value_mode!r}")
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision rule {decision!r}; choose one of {list(DECISIONS)}")
        if explanation_samples < 0 or (explanation_samples and not explains_first(name)):
            raise ValueError(f"explanation_samples must be 0, or a positive number for an E-P program (its label "
                             f"follows its explanation), got {explanation_samples} for {name}")
        self.name = name
        self.k_fraction = k_fraction
        self.value_mode = value_mode
        self.decision = decision
        self.format = format
        self.explanation_samples = explanation_samples
        self.calibration: dict[str, Any] | None = None  # {"rule", "bias", "n", "batch"}: saved with the program
        self.predict = dspy.Predict(signature(name, format))

    @property
    def label_bias(self) -> float:
        """The log-odds offset added to "positive" before the label is decided (0 when uncalibrated)."""
        if self.decision in ("generated", "logprob"):
            return 0.0
        if not self.calibration or self.calibration.get("rule") != self.decision:
            raise ValueError(f"decision rule {self.decision!r} needs calibration: call program.calibrate(...) first")
        return float(self.calibration["bias"])

    def calibrate(self, texts: Sequence[str] | None = None, *, batch_name: str = "",
                  cache: ProbeCache | None = None) -> dict[str, Any]:
        """Set the label bias for the ``contextual`` rule (content-free inputs) or ``batch`` (the given texts).

        The bias is minus the mean label log-odds of those inputs under this very program. Where that needs the
        program decoded in full (E-P), the decoded answers persist in ``cache``: each shard of a sharded run
        calibrates on the whole batch, and only the first decodes it.
        """
        if self.decision not in ("contextual", "batch"):
            raise ValueError(f"decision rule {self.decision!r} takes no calibration")
        inputs = list(CONTENT_FREE) if self.decision == "contextual" else list(texts or [])
        if not inputs:
            raise ValueError("batch calibration needs the texts of the calibration batch")
        decision, self.decision = self.decision, "generated"
        try:
            odds = self._label_odds(inputs, cache)
        finally:
            self.decision = decision
        known = [o for o in odds if o is not None]
        if not known:
            raise ValueError("no label log-probabilities came back: this backend cannot be calibrated")
        digest = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:12]
        self.calibration = {"rule": self.decision, "bias": -sum(known) / len(known), "n": len(known),
                            "batch": batch_name or (f"content-free {list(CONTENT_FREE)}" if
                                                    self.decision == "contextual" else f"sha256:{digest}")}
        return self.calibration

    def _label_odds(self, reviews: Sequence[str], cache: ProbeCache | None = None) -> list[float | None]:
        """Label log-odds of each input. When the label is the first thing decoded (P, P-E) on an embedded
        model, a reading at the label slot gives exactly what the decoder would read (all inputs in one batch);
        otherwise (E-P: the label follows the explanation) the program runs in full, through its
        ``same-program`` probe (its answers cached under the program's fingerprint)."""
        lm, adapter = dspy.settings.lm, dspy.settings.adapter
        first = next(iter(self.predict.signature.output_fields))
        if is_embedded(lm) and first == "label" and isinstance(adapter, LeanAdapter):
            contexts = [lm.engine.prompt_tokens(adapter.format(self.predict.signature, self.predict.demos,
                                                               self._inputs(review)))
                        + lm.engine.tokenize_text('{"label": "') for review in reviews]
            return [float(r[1] - r[0]) for r in lm.engine.read_slots(contexts, ["negative", "positive"])]
        from programs.probe import ProgramProbe  # the probe module builds on this one

        answers = ProgramProbe(self, lm, mode="same-program", cache=cache, adapter=adapter).answers(reviews)
        return [a.label_log_odds for a in answers]

    def dump_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().dump_state(*args, **kwargs)
        state["selfx"] = {"name": self.name, "format": self.format, "decision": self.decision,
                          "value_mode": self.value_mode,
                          "k_fraction": self.k_fraction, "calibration": self.calibration}
        if self.explanation_samples:  # only when set: other programs keep their states and probe cache keys
            state["selfx"]["explanation_samples"] = self.explanation_samples
        return state

    def load_state(self, state: dict[str, Any], *args: Any, **kwargs: Any) -> SentimentProgram:
        state = dict(state)
        extra = state.pop("selfx", None) or {}
        if extra.get("format", "numeric") != self.format:
            raise ValueError(f"this saved program explains in the {extra.get('format')!r} format: build it with "
                             f"SentimentProgram({self.name!r}, format={extra.get('format')!r}) before loading")
        super().load_state(state, *args, **kwargs)
        # a program saved before E-P restated its review: complete its demos, or adapters drop or blank them
        self.predict.demos = [with_restatement(self.predict.signature, demo) for demo in self.predict.demos]
        self.decision = extra.get("decision", self.decision)
        self.value_mode = extra.get("value_mode", self.value_mode)
        self.explanation_samples = extra.get("explanation_samples", 0)
        self.calibration = extra.get("calibration")
        return self

    @property
    def neutral_value(self) -> Any:
        """What an explanation says of a word it finds neither positive nor negative."""
        return "neutral" if self.format == "polarity" else 0.0

    @property
    def order(self) -> str:
        return {"P": "P", "PE": "P-E", "EP": "E-P"}[self.name.split("-")[0]]

    @property
    def granularity(self) -> str | None:
        return None if self.name == "P" else ("topk" if self.name.endswith("topk") else "full")

    def _inputs(self, review: str) -> dict[str, Any]:
        """The predictor's inputs for a review (top-k programs also get their k)."""
        inputs: dict[str, Any] = {"review": review}
        if self.granularity == "topk":
            inputs["k"] = topk_size(len(tokenize(review)), self.k_fraction)
        return inputs

    def forward(self, review: str) -> dspy.Prediction:
        inputs = self._inputs(review)
        config: dict[str, Any] = {"logprobs": True, "top_logprobs": 20}
        bias = self.label_bias
        embedded = is_embedded(dspy.settings.lm)
        if self.explanation_samples and not embedded:
            raise ValueError("explanation_samples needs an embedded model (its label slot is read after each "
                             "sampled explanation); set it to 0 for API models")
        if embedded:
            label_bias = {"negative": 0.0, "positive": bias} if bias else None
            config["metadata"] = DecodeOptions(self.value_mode, label_bias).to_metadata()
        try:
            prediction = self.predict(**inputs, config=config)
        except AdapterParseError as exc:
            return failed_prediction(f"parse: {first_line(exc)}", getattr(exc, "lm_response", None))
        except Exception as exc:  # DSPy wraps engine errors (LMUnexpectedError): look for ours in the chain
            overflow = _cause(exc, ContextOverflow)
            if overflow is None:
                raise
            return failed_prediction(f"context overflow: {overflow}", None)
        prediction.failure = None
        if self.explanation_samples:
            prediction = self._label_over_sampled_explanations(prediction, inputs, config, bias)
        if "k" in inputs:
            # not named "k": an optimiser turns a prediction's fields into demo fields beside the inputs
            prediction.top_k = inputs["k"]
        if not embedded and self.decision != "generated":
            # API models cannot be forced at the slot: decide from their label logprobs, keep what they wrote
            odds = label_log_odds(prediction)
            if odds is not None:
                prediction.generated_label = prediction.label
                prediction.label = "positive" if odds + bias > 0 else "negative"
        prediction.decision = self.decision
        prediction.value_mode = self.value_mode
        return prediction

    def _label_over_sampled_explanations(self, greedy: dspy.Prediction, inputs: dict[str, Any],
                                         config: dict[str, Any], bias: float) -> dspy.Prediction:
        """The greedy answer with its label read as the mean label log-odds after sampled explanations.

        Seeds come from the review, so an answer does not depend on threads or on what was asked before. Where
        the mean decides the other label, the greedy answer is decoded again with that label forced (the
        explanation before it is unchanged), so what follows the label is conditioned on the decided one.
        """
        seed = int(hashlib.sha256(inputs["review"].encode()).hexdigest()[:8], 16)
        odds = [label_log_odds(self.predict(**inputs, config={**config, "temperature": 1.0, "seed": seed + j}))
                for j in range(self.explanation_samples)]
        known = [o for o in odds if o is not None]
        if not known:
            return greedy
        mean = sum(known) / len(known)
        label = "positive" if mean + bias > 0 else "negative"
        if label != greedy.label:
            forced = {"negative": 0.0, "positive": 1e6 if label == "positive" else -1e6}
            greedy = self.predict(**inputs, config={**config, "metadata": DecodeOptions(self.value_mode, forced)
                                                    .to_metadata()})
            greedy.failure = None
        greedy.logprobs = with_label_log_odds(greedy.logprobs, mean)
        return greedy


def label_log_odds(prediction: Any) -> float | None:
    """log P(positive) - log P(negative) at the label slot, or None when unavailable."""
    if getattr(prediction, "failure", None):
        return None
    lp = label_log_probs(getattr(prediction, "logprobs", None))
    return None if lp is None else lp["positive"] - lp["negative"]


def failed_prediction(reason: str, raw: str | None) -> dspy.Prediction:
    return dspy.Prediction(label=None, confidence=None, failure=reason, raw=raw)


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of ``kind`` in its cause/context chain."""
    seen = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
