"""What is optimised: the per-example score a DSPy optimiser maximises, and a trial's objectives on the dev slice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy

from experiments.config import ExperimentConfig, Variant
from experiments.measure import Explanation, measure
from experiments.predict import predict
from experiments.variants import adapter_for, measurement_probe
from metrics.faithfulness import complete_ranking
from metrics.modes import metric_mode
from metrics.stats import mean_ci
from programs.probe_cache import ProbeCache
from programs.readout import to_attribution
from programs.self_explain import SentimentProgram
from programs.types import Example, tokenize

BINS = ("comprehensiveness_bins", "sufficiency_bins")


class OptimizerMetric:
    """The per-example score a DSPy optimiser maximises, chosen by ``search.optimizer_metric``.

    ``accuracy``: 1 for the gold label; ``comprehensiveness``: the ERASER-bin comprehensiveness of
    the example's explanation through the cached probe of the program the optimiser started from (0 when
    there is none: a prediction-only program or a failed answer); ``combined``: (1 - w) * correct + w *
    comprehensiveness. Called with GEPA's extra arguments it returns a score with textual feedback that says
    how the model's own prediction moved when the words the explanation ranked highest were deleted.
    """

    def __init__(self, kind: str, weight: float, lm: Any, config: ExperimentConfig, cache: ProbeCache | None, *,
                 program: SentimentProgram, adapter: str = "lean") -> None:
        self.kind, self.weight, self.config = kind, weight, config
        self.mode = metric_mode(config.measure.mode)
        # an optimiser changes the program while it calls the metric: faithfulness is read through the decision
        # of the program it started from (the compiled program's own probe measures the trial afterwards)
        self.probe = measurement_probe(program, adapter, config, lm, cache) if kind != "accuracy" else None

    def __call__(self, gold: dspy.Example, prediction: dspy.Prediction, trace: Any = None,
                 pred_name: str | None = None, pred_trace: Any = None) -> Any:
        correct = float(getattr(prediction, "label", None) == gold.label)
        comp, ranked = self._comprehensiveness(gold.review, prediction)
        score = {"accuracy": correct, "comprehensiveness": comp or 0.0,
                 "combined": (1 - self.weight) * correct + self.weight * (comp or 0.0)}[self.kind]
        if pred_name is None and pred_trace is None:
            return score
        feedback = f"The gold label is {gold.label}; the program said {getattr(prediction, 'label', None)}."
        if ranked:
            feedback += " It ranked highest: " + ", ".join(ranked) + "."
        if comp is not None:
            feedback += (f" Deleting its top-ranked words lowered the model's own probability of its prediction "
                         f"by {comp:.3f} on average over the 1-50 % bins (higher = more faithful).")
        return dspy.Prediction(score=score, feedback=feedback)

    def _comprehensiveness(self, review: str, prediction: dspy.Prediction) -> tuple[float | None, list[str]]:
        explanation = Explanation.of(to_attribution(prediction, review))
        if explanation is None:
            return None, []
        tokens = list(tokenize(review))
        predicted = int(getattr(prediction, "label", None) == "positive")
        order = explanation.ranking or complete_ranking(explanation.values, None, len(tokens), predicted, self.mode,
                                                        None)
        ranked = [tokens[i] for i in order[:3]]
        if self.probe is None:
            return None, ranked
        measured = measure([tokens], {"self": [explanation]}, self.probe, mode=self.mode, protocol="bins",
                           metrics=BINS, seed=self.config.seed)
        return measured.rows["self"][0].get("comprehensiveness_bins"), ranked


def dev_objectives(program: SentimentProgram, variant: Variant, lm: Any, dev: Sequence[Example],
                   config: ExperimentConfig, cache: ProbeCache) -> dict[str, float | None]:
    """Accuracy on dev and ERASER-bin faithfulness on a dev sample (cached probe); cost reported."""
    ran = predict(program, dev, lm, adapter=adapter_for(variant.adapter), threads=config.concurrency)
    answers = ran.answers
    out: dict[str, float | None] = {
        "accuracy": mean_ci([None if not a.ok else float(a.label_int == e.label)
                             for a, e in zip(answers, dev, strict=True)]).mean,
        "parse_failure_rate": sum(not a.ok for a in answers) / len(dev),
        "seconds_per_example": ran.seconds / len(dev),
    }
    if program.granularity is None:
        return {**out, **dict.fromkeys(BINS)}
    probe = measurement_probe(program, variant.adapter, config, lm, cache)
    n = config.measure.faithfulness_n
    calls = probe.stats.model_calls
    # the same seed per sentence as the held-out measurement, so a top-k ranking is padded alike
    measured = measure([list(e.tokens) for e in dev[:n]], {"self": [Explanation.of(a) for a in ran.attributions[:n]]},
                       probe, mode=metric_mode(config.measure.mode), protocol="bins", metrics=BINS,
                       originals=probe.answers([e.text for e in dev[:n]]), seed=config.seed)
    out.update({metric: measured.summary["self"][metric] for metric in BINS})
    out["objective_probe_calls"] = probe.stats.model_calls - calls
    return out
