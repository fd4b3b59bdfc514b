"""LIME through the ``lime`` library, every perturbed text asked through the probe.

corrected (default): a whitespace tokeniser (every token position is a feature, repeated words
included), deleted words removed (the same perturbation as occlusion and the metrics), a fixed
``random_state``, explaining the predicted class.
compat (the study's settings, digest 1.7): LIME's ``\\W+`` tokeniser, ``UNKWORDZ`` masking,
``labels=(1,)``, num_samples = 10 x LIME words, weights mapped back by first unused exact match
and U(-0.001, 0.001) filler for tokens LIME cannot see. (The study set no random_state; we still
seed it so a run can be repeated.)
Values are always in P(positive) orientation: positive = evidence for the positive class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from programs.explainers.base import p_positive
from programs.probe import Probe
from programs.types import Attribution


class LimeExplainer:
    def __init__(self, *, compat: bool = False, samples_per_token: int = 10, seed: int = 0,
                 p_source: str = "stated", failure_as_default: bool | None = None) -> None:
        self.compat = compat
        self.samples_per_token = samples_per_token
        self.seed = seed
        self.p_source = p_source
        self.failure_as_default = compat if failure_as_default is None else failure_as_default

    def texts(self, tokens: Sequence[str]) -> list[str]:
        """Every text :meth:`explain` asks the probe about: LIME draws its samples from its seeded stream
        before it calls the classifier once, so a recording pass with the same seed sees exactly them."""
        recorded: list[str] = []

        def record(texts: list[str]) -> np.ndarray:
            recorded.extend(self._cleaned(texts))
            raise _Recorded

        explainer, text, n_features = self._explainer(tokens)
        try:
            explainer.explain_instance(text, record, labels=(1,), num_features=n_features,
                                       num_samples=self.samples_per_token * n_features)
        except _Recorded:
            pass
        return ([] if self.compat else [text]) + recorded

    def explain(self, tokens: Sequence[str], probe: Probe) -> Attribution:
        explainer, text, n_features = self._explainer(tokens)
        failed = 0

        def classify(texts: list[str]) -> np.ndarray:
            nonlocal failed
            probs = []
            for answer in probe.answers(self._cleaned(texts)):
                p = p_positive(answer, self.p_source, failure_as_default=self.failure_as_default)
                if p is None:  # LIME needs a number for every sample: count it, score it neutral
                    failed += 1
                    p = 0.5
                probs.append(p)
            p_pos = np.asarray(probs, float)
            return np.column_stack([1.0 - p_pos, p_pos])

        if self.compat:
            label = 1
        else:
            original = probe.answers([text])[0]
            label = 1 if not original.ok or original.label == "positive" else 0
        explanation = explainer.explain_instance(text, classify, labels=(label,), num_features=n_features,
                                                 num_samples=self.samples_per_token * n_features)
        weights = dict(explanation.as_map()[label])
        sign = 1.0 if label == 1 else -1.0
        if self.compat:
            words = [explanation.domain_mapper.indexed_string.word(j) for j in range(n_features)]
            values = _map_back(tokens, words, weights, np.random.default_rng(self.seed))
        else:
            values = tuple(sign * weights[j] if j in weights else None for j in range(len(tokens)))
        return Attribution(values, "lime", info={
            "mode": "compat" if self.compat else "corrected", "explained_label": label, "seed": self.seed,
            "num_samples": self.samples_per_token * n_features, "failed_samples": failed,
            "perturbation": "mask:UNKWORDZ" if self.compat else "delete", "probe": probe.fingerprint})

    def _explainer(self, tokens: Sequence[str]) -> tuple[Any, str, int]:
        """A fresh LIME explainer (its random stream starts at the seed), the text and the feature count."""
        try:
            from lime.lime_text import IndexedString, LimeTextExplainer
        except ImportError as exc:  # pragma: no cover - install hint
            raise ImportError("LIME needs the lime package: pip install lime") from exc
        text = " ".join(tokens)
        if self.compat:
            explainer = LimeTextExplainer(class_names=["negative", "positive"], bow=False, random_state=self.seed)
            n_features = IndexedString(text, bow=False).num_words()
        else:
            explainer = LimeTextExplainer(class_names=["negative", "positive"], bow=False, mask_string="",
                                          split_expression=lambda s: s.split(), random_state=self.seed)
            n_features = len(tokens)
        return explainer, text, max(1, n_features)

    def _cleaned(self, texts: Sequence[str]) -> list[str]:
        # corrected mode deletes words (an empty mask string leaves double spaces): the same texts as occlusion
        return list(texts) if self.compat else [" ".join(t.split()) for t in texts]


class _Recorded(Exception):
    """Stops LIME once it has handed over its samples."""


def _map_back(tokens: Sequence[str], words: Sequence[str], weights: dict[int, float],
              rng: np.random.Generator) -> tuple[float, ...]:
    """The study's mapping: first unused LIME word with the same string; U(-0.001, 0.001) otherwise."""
    used: set[int] = set()
    values = []
    for token in tokens:
        j = next((j for j, w in enumerate(words) if w == token and j not in used), None)
        if j is None:
            values.append(float(rng.uniform(-0.001, 0.001)))
        else:
            used.add(j)
            values.append(float(weights.get(j, 0.0)))
    return tuple(values)
