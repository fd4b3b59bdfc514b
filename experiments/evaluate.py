"""``selfx evaluate``: run programs over a dataset and summarise accuracy, failures, coverage, cost, and
(on request) every decision rule side by side and the explanations' faithfulness."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median
from typing import Any

import dspy

from experiments import progress
from experiments.measure import (
    Explanation,
    explain,
    explanation_quality,
    occlusion_agreement,
    program_faithfulness,
)
from experiments.predict import Predictions, predict
from metrics.accuracy import accuracy
from metrics.calibration import decision_rules
from metrics.modes import CORRECTED
from metrics.robustness import injection_flips
from programs.data import injected_pairs, load_examples
from programs.demos import build_demos
from programs.lean_adapter import default_adapter
from programs.lm import check_value_mode, describe_lm, make_lm
from programs.probe import ProgramProbe
from programs.probe_cache import ProbeCache
from programs.self_explain import CONTENT_FREE, DECISIONS, PROGRAM_NAMES, SentimentProgram, label_log_odds
from programs.types import Example, InputError


def resolve_programs(choice: str) -> list[str]:
    if choice == "all":
        return list(PROGRAM_NAMES)
    names = [c.strip() for c in choice.split(",")]
    unknown = [n for n in names if n not in PROGRAM_NAMES]
    if unknown:
        raise InputError(f"unknown program(s) {unknown}; choose from {list(PROGRAM_NAMES)} or all")
    return names


def summarise(examples: Sequence[Example], ran: Predictions) -> dict[str, Any]:
    """Accuracy over parsed answers (failures counted, never scored), coverage, explanation quality, cost."""
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
    full = [a for a in attributions if a.ranking is None]
    if full:
        summary.update(explanation_quality([Explanation.of(a) for a in full]))
        summary["explanation_range_violations"] = sum(a.info.get("range_violations", 0) for a in full)
    return summary


def evaluate(programs: str = "all", *, data: str = "sst2", n: int = 20, lm_spec: str = "local",
             api_base: str | None = None, value_mode: str = "sample", decision: str = "generated",
             demos: int = 0, demo_seed: int = 0, demo_source: str = "occlusion",
             with_occlusion: bool = False, faithfulness: bool = False, probe_mode: str = "logprob",
             format: str = "numeric", lime_samples_per_token: int = 0, concurrency: int = 4) -> dict[str, Any]:
    """Run each program on the first ``n`` examples and summarise; ``faithfulness`` / ``with_occlusion`` measure
    its explanations through its own probe (``probe_mode``), beside occlusion, random and (when
    ``lime_samples_per_token`` > 0) LIME."""
    if lime_samples_per_token < 0:
        raise InputError(f"--lime-samples must be 0 (no LIME) or a positive number, got {lime_samples_per_token}")
    if decision not in (*DECISIONS, "all"):
        raise InputError(f"unknown decision rule {decision!r}; choose one of {[*DECISIONS, 'all']}")
    check_value_mode(lm_spec, api_base, value_mode)
    # --data injected: the same reviews without their injection are answered too, to count flips
    pairs = injected_pairs(n=n) if data == "injected" else None
    examples = [a for _, a in pairs] if pairs else load_examples(data, split="validation", n=n)
    clean = [c for c, _ in pairs] if pairs else None
    lm = make_lm(lm_spec, api_base=api_base, cache=False)
    adapter = default_adapter(lm)
    cache = ProbeCache()
    report: dict[str, Any] = {}
    for name in resolve_programs(programs):
        program = SentimentProgram(name, value_mode=value_mode, decision="generated" if decision == "all" else decision,
                                   format=format)
        if demos:
            with dspy.context(lm=lm, adapter=adapter):
                program.predict.demos = build_demos(name, demos, lm=lm, source=demo_source, seed=demo_seed,
                                                    cache=cache, format=format)
        if program.decision in ("contextual", "batch"):
            with dspy.context(lm=lm, adapter=adapter):
                batch = clean or examples  # injected reviews do not get to move the calibration
                program.calibrate([e.text for e in batch], batch_name=f"{'sst2' if clean else data}:validation"
                                                                      f"[:{len(batch)}]")
        ran = predict(program, examples, lm, progress=progress.enabled(), threads=concurrency)
        summary = summarise(examples, ran)
        if clean:
            before = predict(program, clean, lm, progress=progress.enabled(), threads=concurrency)
            summary.update(injection_flips([a.label for a in before.answers], [a.label for a in ran.answers],
                                           ["negative" if c.label == 1 else "positive" for c in clean]))
            summary["clean_accuracy"] = summarise(clean, before)["accuracy"]
        probe = ProgramProbe(program, lm, mode=probe_mode, cache=cache, adapter=adapter, concurrency=concurrency,
                             progress=progress.bar)
        if faithfulness and program.granularity is not None:
            explainers = ("occlusion", "random", *(("lime",) if lime_samples_per_token else ()))
            measured, _, _ = program_faithfulness(examples, ran.attributions, probe, mode=CORRECTED,
                                                  explainers=explainers, lime_samples_per_token=lime_samples_per_token)
            summary.update({**measured, **probe.describe()})
        elif with_occlusion and program.granularity == "full":
            tokens = [list(e.tokens) for e in examples]
            kinds = {"self": [Explanation.of(a) for a in ran.attributions],
                     **explain(("occlusion",), tokens, probe, mode=CORRECTED)}
            summary.update(occlusion_agreement(tokens, kinds, probe.answers([e.text for e in examples]),
                                               mode=CORRECTED))
        row = {**describe_lm(lm), "data": data, "decision": decision, "value_mode": value_mode, "format": format, "demos": demos,
               "demo_source": (demo_source if name != "P" else "label") if demos else None,
               "answer_fields": list(program.predict.signature.output_fields), **summary,
               # per sentence, so runs and programs on the same sentences can be compared pair by pair
               "examples": [{"id": e.id, "gold": e.label, "label": a.label, "log_odds": o}
                            for e, a, o in zip(examples, ran.answers, ran.odds, strict=True)]}
        if program.calibration:
            row["calibration"] = program.calibration
        if decision == "all":
            with dspy.context(lm=lm, adapter=adapter):
                free = [label_log_odds(program(review=t)) for t in CONTENT_FREE]
            row["decisions"] = decision_rules(ran.odds, [a.label for a in ran.answers], [e.label for e in examples],
                                              [o for o in free if o is not None])
        report[name] = row
    return report
