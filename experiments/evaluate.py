"""``selfx evaluate``: run programs over a dataset and summarise accuracy, failures, coverage, cost."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from statistics import median
from typing import Any, Sequence

import dspy

from experiments.faithfulness_run import explanation_faithfulness, explanation_quality
from metrics.accuracy import accuracy, auc
from metrics.calibration import expected_calibration_error
from metrics.stats import mean_ci
from programs.data import load_examples
from programs.demos import build_demos
from programs.lean_adapter import default_adapter
from programs.lm import check_value_mode, describe_lm, history_tokens, is_embedded, make_lm
from programs.probe import Probe, ProgramProbe
from programs.probe_cache import ProbeCache
from programs.readout import to_answer, to_attribution
from programs.self_explain import (
    CONTENT_FREE,
    DECISIONS,
    PROGRAM_NAMES,
    SentimentProgram,
    failed_prediction,
    label_log_odds,
)
from programs.types import Answer, Attribution, Example


def resolve_programs(choice: str) -> list[str]:
    if choice == "all":
        return list(PROGRAM_NAMES)
    names = [c.strip() for c in choice.split(",")]
    unknown = [n for n in names if n not in PROGRAM_NAMES]
    if unknown:
        raise ValueError(f"unknown program(s) {unknown}; choose from {list(PROGRAM_NAMES)} or all")
    return names


@dataclass
class ProgramRun:
    """One program over a list of examples, as ``dspy.Evaluate`` ran it, with its cost."""

    predictions: list[Any]
    answers: list[Answer]
    attributions: list[Attribution | None]
    odds: list[float | None]  # label log-odds read at the slot (None: failure or unavailable)
    durations: list[float]  # seconds per example, in example order
    seconds: float
    lm_calls: int
    tokens: int


def run_program(program: SentimentProgram, examples: Sequence[Example], lm: Any, *,
                adapter: dspy.Adapter | None = None, threads: int | None = None,
                progress: bool = False) -> ProgramRun:
    """Run a program on every example with ``dspy.Evaluate`` (threads where the backend allows;
    one for an in-process model, which a lock serialises anyway)."""
    adapter = adapter or default_adapter(lm)
    threads = threads or (1 if is_embedded(lm) else 8)
    history_start = len(lm.history)
    durations: dict[str, float] = {}

    def timed(review: str) -> Any:
        started = time.perf_counter()
        prediction = program(review=review)
        durations[review] = time.perf_counter() - started
        return prediction

    devset = [dspy.Example(review=e.text, label="positive" if e.label else "negative").with_inputs("review")
              for e in examples]
    start = time.perf_counter()
    with dspy.context(lm=lm, adapter=adapter):
        result = dspy.Evaluate(devset=devset, metric=_label_metric, num_threads=threads, display_progress=progress,
                               provide_traceback=False)(timed)
    seconds = time.perf_counter() - start
    # dspy.Evaluate logs an exception and substitutes an empty Prediction: keep it a counted failure
    predictions = [prediction if "label" in prediction or getattr(prediction, "failure", None) else
                   failed_prediction("error: the program raised (see the dspy.Evaluate log)", None)
                   for _, prediction, _ in result.results]
    return ProgramRun(predictions=predictions, answers=[to_answer(p) for p in predictions],
                      attributions=[to_attribution(p, e.text) for p, e in zip(predictions, examples)],
                      odds=[label_log_odds(p) for p in predictions],
                      durations=[durations.get(e.text, 0.0) for e in examples], seconds=seconds,
                      lm_calls=len(lm.history) - history_start, tokens=history_tokens(lm.history[history_start:]))


def _label_metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
    return float(getattr(prediction, "label", None) is not None and prediction.label == example.label)


def evaluate_program(program: SentimentProgram, examples: Sequence[Example], lm: Any, *,
                     threads: int | None = None, progress: bool = True,
                     occlusion_probe: Probe | None = None) -> tuple[dict[str, Any], ProgramRun]:
    """Run one program on every example: (summary, the run). Failures are counted and excluded
    from accuracy."""
    ran = run_program(program, examples, lm, threads=threads, progress=progress and sys.stderr.isatty())
    answers = ran.answers
    attributions = [a for a in ran.attributions if a is not None]
    acc, scored = accuracy([a.label_int for a in answers], [e.label for e in examples])
    failures = [a for a in answers if not a.ok]
    summary: dict[str, Any] = {
        "n": len(examples),
        "accuracy": acc,
        "n_scored": scored,
        "parse_failures": len(failures),
        "parse_failure_rate": len(failures) / len(examples),
        "token_coverage": (sum(a.coverage for a in attributions) / len(attributions)) if attributions else None,
        "range_violations": sum(a.info.get("range_violations", 0) for a in attributions),
        "positive_share": (sum(a.label == "positive" for a in answers if a.ok) / scored) if scored else None,
        "seconds_per_example": ran.seconds / len(examples),
        "seconds_per_example_median": median(ran.durations),
        "tokens_per_example": ran.tokens / len(examples),
        "failures": [{"reason": a.failure, "raw": (a.raw or "")[:300]} for a in failures[:20]],
    }
    summary.update(explanation_quality(examples, ran.attributions, occlusion_probe))
    return summary, ran


def decision_rules(odds: Sequence[float | None], generated: Sequence[str | None], gold: Sequence[int],
                   content_free_odds: Sequence[float]) -> dict[str, dict[str, Any]]:
    """Every decision rule side by side from one pass: accuracy, AUC, positive share, ECE.

    ``odds`` are the label log-odds read at the slot (None for failures); the calibrated rules add
    minus the mean log-odds of the content-free inputs (contextual) or of this batch (batch).
    """
    known = [o for o in odds if o is not None]
    biases = {"generated": None, "logprob": 0.0,
              "contextual": -sum(content_free_odds) / len(content_free_odds) if content_free_odds else None,
              "batch": -sum(known) / len(known) if known else None}
    out: dict[str, dict[str, Any]] = {}
    for rule, bias in biases.items():
        if rule != "generated" and bias is None:
            out[rule] = {"unavailable": "no label log-probabilities"}
            continue
        if rule == "generated":
            labels = [None if g is None else int(g == "positive") for g in generated]
        else:
            labels = [None if o is None else int(o + bias > 0) for o in odds]
        acc, scored = accuracy(labels, gold)
        confidences, correct = [], []
        for o, label, y in zip(odds, labels, gold):
            if o is not None and label is not None and rule != "generated":
                p_pos = 1 / (1 + math.exp(-(o + bias)))
                confidences.append(p_pos if label == 1 else 1 - p_pos)
                correct.append(label == y)
        out[rule] = {
            "accuracy": acc, "accuracy_ci": _ci([None if p is None else float(p == y) for p, y in zip(labels, gold)]),
            "auc": auc([o for o in odds if o is not None], [y for o, y in zip(odds, gold) if o is not None]),
            "positive_share": (sum(label == 1 for label in labels if label is not None) / scored) if scored else None,
            "ece": expected_calibration_error(confidences, correct) if confidences else None,
            "bias": bias, "n_scored": scored,
        }
    return out


def _ci(values: Sequence[float | None]) -> list[float | None]:
    estimate = mean_ci(values)
    return [estimate.low, estimate.high]


def evaluate(programs: str = "all", *, data: str = "sst2", n: int = 20, lm_spec: str = "local",
             api_base: str | None = None, value_mode: str = "sample", decision: str = "generated",
             demos: int = 0, demo_seed: int = 0, demo_source: str = "occlusion",
             with_occlusion: bool = False, faithfulness: bool = False) -> dict[str, Any]:
    if decision not in (*DECISIONS, "all"):
        raise ValueError(f"unknown decision rule {decision!r}; choose one of {[*DECISIONS, 'all']}")
    check_value_mode(lm_spec, api_base, value_mode)
    examples = load_examples(data, split="validation", n=n)
    lm = make_lm(lm_spec, api_base=api_base, cache=False)
    adapter = default_adapter(lm)
    report: dict[str, Any] = {}
    for name in resolve_programs(programs):
        program = SentimentProgram(name, value_mode=value_mode,
                                   decision="generated" if decision == "all" else decision)
        if demos:
            with dspy.context(lm=lm, adapter=adapter):
                program.predict.demos = build_demos(name, demos, lm=lm, source=demo_source, seed=demo_seed,
                                                    cache=ProbeCache())
        if program.decision in ("contextual", "batch"):
            with dspy.context(lm=lm, adapter=adapter):
                program.calibrate([e.text for e in examples], batch_name=f"{data}:validation[:{len(examples)}]")
        occlusion_probe = (ProgramProbe(SentimentProgram("P"), lm, mode="logprob", cache=ProbeCache())
                           if with_occlusion and not faithfulness and program.granularity == "full" else None)
        summary, ran = evaluate_program(program, examples, lm, occlusion_probe=occlusion_probe)
        if faithfulness and program.granularity is not None:
            measured, _ = explanation_faithfulness(examples, ran.attributions, lm, cache=ProbeCache())
            summary.update(measured)
        row = {**describe_lm(lm), "decision": decision, "value_mode": value_mode, "demos": demos,
               "demo_source": (demo_source if name != "P" else "label") if demos else None, **summary}
        if program.calibration:
            row["calibration"] = program.calibration
        if decision == "all":
            with dspy.context(lm=lm, adapter=adapter):
                free = [label_log_odds(program(review=t)) for t in CONTENT_FREE]
            row["decisions"] = decision_rules(ran.odds, [a.label for a in ran.answers], [e.label for e in examples],
                                              [o for o in free if o is not None])
        report[name] = row
    return report
