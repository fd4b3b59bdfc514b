"""Few-shot demos for the programs: gold-labelled reviews and teacher explanations.

- ``label``: balanced gold-labelled reviews from the train split (what P needs);
- ``occlusion`` (teacher demos): the same reviews whose explanation is the model's *own* occlusion,
  scaled so the largest |value| is 1 and rounded to the decoder's 0.1 grid; top-k demos take the k
  tokens with the highest occlusion value (most positive first, as the study's top-k prompt asks).
  Without circularity: the explaining program's decision depends on its demos' explanations, so a
  demo's occlusion is computed through the decision the program has *before* it has explanations: the
  prediction-only program with the other k - 1 reviews as gold-labelled demos (leave-one-out, so a
  review never sees itself), read at its label slot and cached;
- ``self`` (bootstrapped): the program's own zero-shot explanations of those reviews, kept only
  where its label was right (DSPy's bootstrapping idea, without an optimiser);
- ``lexicon``: reviews whose words carry their sentiment in a human-rated word lexicon (VADER's valences, -4 .. 4,
  scaled by 1/4 to the explanation's [-1, 1]; words it does not rate are 0): sparse, and predictable from the word
  itself, where occlusion teacher words are neither. The reviews are drawn only from those where the lexicon marks
  a word toward the gold label (VADER misses many review words, e.g. "listless" or "uplifting", and a demo whose
  sentiment words are all marked neutral teaches the model to mark none). No model is asked.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import dspy

from programs.data import load_examples
from programs.explainers.lexicon import lexicon_values
from programs.explainers.occlusion import OcclusionExplainer
from programs.probe import Probe
from programs.probe_cache import ProbeCache
from programs.signatures import signature, with_restatement
from programs.types import LABELS, Example, InputError, topk_size

# where an explaining program's demos get their explanations (P's demos are gold labels only)
EXPLANATION_SOURCES = ("occlusion", "lexicon", "self")
DEMO_SOURCES = ("label", *EXPLANATION_SOURCES)
DEMO_CONFIDENCE = 0.9


def pick_examples(k: int, *, seed: int = 0, data: str = "sst2", max_tokens: int = 14,
                  keep: Callable[[Example], bool] | None = None) -> list[Example]:
    """k short training reviews (of those ``keep`` accepts, if given), half positive and half negative, in a seeded
    order."""
    if k < 0:
        raise InputError(f"the number of demos must be >= 0, got {k}")
    pool = [e for e in load_examples(data, split="train")
            if len(e.tokens) <= max_tokens and (keep is None or keep(e))]
    rng = random.Random(seed)
    rng.shuffle(pool)
    positives = [e for e in pool if e.label == 1][: (k + 1) // 2]
    negatives = [e for e in pool if e.label == 0][: k // 2]
    chosen = positives + negatives
    rng.shuffle(chosen)
    return chosen


def build_demos(program_name: str, k: int, *, lm: Any, source: str = "occlusion", seed: int = 0,
                cache: ProbeCache | None = None, format: str = "numeric") -> list[dspy.Example]:
    """k demos for a program: gold labels for P; for explaining programs, teacher demos (the model's own
    occlusion through a cached logprob probe), lexicon demos (``source="lexicon"``, on reviews the lexicon marks
    toward their label; no model asked) or bootstrapped self-explanations (``source="self"``, run under the
    caller's ``dspy.context``)."""
    if program_name == "P":
        return make_demos("P", pick_examples(k, seed=seed), source="label")
    examples = pick_examples(k, seed=seed, keep=lexicon_supports_label if source == "lexicon" else None)
    if source in ("self", "lexicon"):
        return make_demos(program_name, examples, source=source, format=format)
    from programs.probe import ProgramProbe
    from programs.self_explain import SentimentProgram

    labelled = make_demos("P", examples, source="label")
    demos = []
    for i, example in enumerate(examples):
        teacher = SentimentProgram("P")
        teacher.predict.demos = labelled[:i] + labelled[i + 1:]
        probe = ProgramProbe(teacher, lm, mode="logprob", cache=cache)
        demos += make_demos(program_name, [example], source="occlusion", probe=probe, format=format)
    return demos


def make_demos(program_name: str, examples: Sequence[Example], *, source: str = "label",
               probe: Probe | None = None, format: str = "numeric") -> list[dspy.Example]:
    """Demos for a program. Explaining programs need ``source="occlusion"`` and a probe, ``"lexicon"`` or
    ``"self"``. In the ``polarity`` format a teacher value becomes ``positive`` (scaled value >= 0.25),
    ``negative`` (<= -0.25) or ``neutral``."""
    if source not in DEMO_SOURCES:
        raise ValueError(f"unknown demo source {source!r}; choose one of {list(DEMO_SOURCES)}")
    explaining = program_name != "P"
    if explaining and source == "label":
        raise ValueError(f"{program_name} demos need explanations: use source 'occlusion', 'lexicon' or 'self'")
    if explaining and source == "occlusion" and probe is None:
        raise ValueError("teacher demos need a probe to compute the model's own occlusion")
    if source == "self":
        return _bootstrapped(program_name, examples, format)
    demos = []
    occlusion = OcclusionExplainer(p_source=probe.p_source) if probe is not None else None
    for example in examples:
        fields = {"review": example.text, "label": LABELS[example.label], "confidence": DEMO_CONFIDENCE}
        if explaining:
            tokens = list(example.tokens)
            if source == "lexicon":
                values, scale = list(lexicon_values(tokens)), 1.0
            else:
                values = [v if v is not None else 0.0 for v in occlusion.explain(tokens, probe).values]
                scale = max((abs(v) for v in values), default=0.0) or 1.0
            scaled = [on_grid(v / scale) for v in values]
            if program_name.endswith("topk"):
                k = topk_size(len(tokens))
                # the k most significant words, from the most positive to the most negative (the top-k prompt's
                # order): occlusion's most significant are its largest effects, a lexicon's its strongest valences
                # of either sign
                strength = [abs(v) for v in values] if source == "lexicon" else values
                order = sorted(range(len(tokens)), key=lambda i: -strength[i])
                value = {}
                for i in order:
                    value.setdefault(tokens[i], values[i])
                fields.update(k=k, top_words=sorted(list(value)[:k], key=lambda t: -value[t]))
            else:
                fields["explanation"] = [[t, polarity(v) if format == "polarity" else v]
                                         for t, v in zip(tokens, scaled, strict=True)]
        demos.append(_demo(program_name, format, fields))
    return demos


def lexicon_supports_label(example: Example) -> bool:
    """Whether the review's lexicon explanation marks a word toward its gold label (``polarity`` of the scaled
    valence, the cut its demo's words get)."""
    wanted = LABELS[example.label]
    return any(polarity(on_grid(v)) == wanted for v in lexicon_values(example.tokens))


def _demo(program_name: str, format: str, fields: dict[str, Any]) -> dspy.Example:
    """A demo of the program's signature from its fields (E-P's restated review is the review)."""
    fields = with_restatement(signature(program_name, format), fields)
    return dspy.Example(**fields).with_inputs("review", *(["k"] if "k" in fields else []))


def on_grid(value: float) -> float:
    """A scaled explanation value on the decoder's 0.1 grid (no negative zero), as demos show it.

    >>> on_grid(0.775), on_grid(-0.04), on_grid(0.25)
    (0.8, 0.0, 0.2)
    """
    return round(value, 1) + 0.0


def polarity(value: float, threshold: float = 0.25) -> str:
    """A scaled teacher value as a polarity word.

    >>> polarity(0.4), polarity(-0.2), polarity(-1.0)
    ('positive', 'neutral', 'negative')
    """
    return "positive" if value >= threshold else "negative" if value <= -threshold else "neutral"


def _bootstrapped(program_name: str, examples: Sequence[Example], format: str) -> list[dspy.Example]:
    """The program's own zero-shot answers on the examples it labels correctly (needs dspy.settings.lm)."""
    from programs.self_explain import SentimentProgram

    program = SentimentProgram(program_name, value_mode="expected", format=format)
    demos = []
    for example in examples:
        prediction = program(review=example.text)
        if prediction.failure or prediction.label != LABELS[example.label]:
            continue
        fields = {"review": example.text, "label": prediction.label, "confidence": prediction.confidence}
        if program_name.endswith("topk"):
            fields.update(k=prediction.top_k, top_words=list(prediction.top_words))
        elif program_name != "P":
            fields["explanation"] = [[t, v if isinstance(v, str) else on_grid(float(v))]
                                     for t, v in prediction.explanation]
        demos.append(_demo(program_name, format, fields))
    return demos
