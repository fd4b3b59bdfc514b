"""``selfx evaluate``: run programs over a dataset and summarise accuracy, failures, coverage, cost."""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from statistics import median
from typing import Any, Sequence

import dspy
from scipy.stats import spearmanr

from metrics.accuracy import accuracy, auc
from metrics.calibration import expected_calibration_error
from metrics.stats import mean_ci
from programs.data import load_examples
from programs.demos import build_demos
from programs.explainers.occlusion import Occlusion
from programs.lean_adapter import default_adapter
from programs.lm import describe_lm, history_tokens, is_embedded, make_lm
from programs.probe import Probe, ProgramProbe
from programs.probe_cache import ProbeCache
from programs.readout import to_answer, to_attribution
from programs.self_explain import CONTENT_FREE, DECISIONS, PROGRAM_NAMES, SentimentProgram, label_log_odds
from programs.types import Answer, Attribution, Example


def resolve_programs(choice: str) -> list[str]:
    if choice == "all":
        return list(PROGRAM_NAMES)
    names = [c.strip() for c in choice.split(",")]
    unknown = [n for n in names if n not in PROGRAM_NAMES]
    if unknown:
        raise ValueError(f"unknown program(s) {unknown}; choose from {list(PROGRAM_NAMES)} or all")
    return names


def explanation_quality(examples: Sequence[Example], attributions: Sequence[Attribution | None],
                        occlusion_probe: Probe | None) -> dict[str, Any]:
    """For full explanations: non-degenerate share (>= 3 distinct values), range violations and the
    Spearman correlation with the model's own occlusion (mean over examples, bootstrap CI)."""
    full = [(e, a) for e, a in zip(examples, attributions) if a is not None and a.ranking is None]
    if not full:
        return {}
    out: dict[str, Any] = {
        "explanation_nondegenerate_rate": sum(len({v for v in a.values if v is not None}) >= 3 for _, a in full)
        / len(full),
        "explanation_range_violations": sum(a.info.get("range_violations", 0) for _, a in full),
    }
    if occlusion_probe is not None:
        occlusion = Occlusion(p_source="logprob" if getattr(occlusion_probe, "mode", "") == "logprob" else "stated")
        rhos: list[float | None] = []
        for example, attribution in full:
            reference = occlusion.explain(list(example.tokens), occlusion_probe).values
            pairs = [(x, y) for x, y in zip(attribution.values, reference) if x is not None and y is not None]
            xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
            constant = len(pairs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2
            rhos.append(None if constant else float(spearmanr(xs, ys).statistic))
        out.update(mean_ci(rhos).as_dict("spearman_vs_occlusion"))
    return out


def evaluate_program(program: SentimentProgram, examples: Sequence[Example], lm: Any, *,
                     threads: int = 1, progress: bool = True,
                     occlusion_probe: Probe | None = None) -> tuple[dict[str, Any], list[Answer], list[float | None]]:
    """Run one program on every example: (summary, answers, label log-odds per example).

    Failures are counted and excluded from accuracy."""
    adapter = default_adapter(lm)
    history_start = len(lm.history)

    durations: list[float] = []

    def run(example: Example) -> tuple[Any, Any, float | None]:
        started = time.perf_counter()
        with dspy.context(lm=lm, adapter=adapter):
            prediction = program(review=example.text)
        durations.append(time.perf_counter() - started)
        return to_answer(prediction), to_attribution(prediction, example.text), label_log_odds(prediction)

    start = time.perf_counter()
    results: list[tuple[Any, Any, float | None]] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i, result in enumerate(pool.map(run, examples), 1):
            results.append(result)
            if progress and sys.stderr.isatty():
                print(f"\r{program.name}: {i}/{len(examples)}", end="", file=sys.stderr, flush=True)
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)
    seconds = time.perf_counter() - start
    answers = [r[0] for r in results]
    attributions = [r[1] for r in results if r[1] is not None]
    acc, scored = accuracy([a.label_int for a in answers], [e.label for e in examples])
    failures = [a for a in answers if not a.ok]
    tokens = history_tokens(lm.history[history_start:])
    summary: dict[str, Any] = {
        "n": len(examples),
        "accuracy": acc,
        "n_scored": scored,
        "parse_failures": len(failures),
        "parse_failure_rate": len(failures) / len(examples),
        "token_coverage": (sum(a.coverage for a in attributions) / len(attributions)) if attributions else None,
        "range_violations": sum(a.info.get("range_violations", 0) for a in attributions),
        "positive_share": (sum(a.label == "positive" for a in answers if a.ok) / scored) if scored else None,
        "seconds_per_example": seconds / len(examples),
        "seconds_per_example_median": median(durations),
        "tokens_per_example": tokens / len(examples),
        "failures": [{"reason": a.failure, "raw": (a.raw or "")[:300]} for a in failures[:20]],
    }
    summary.update(explanation_quality(examples, [r[1] for r in results], occlusion_probe))
    return summary, answers, [r[2] for r in results]


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
             with_occlusion: bool = False) -> dict[str, Any]:
    if decision not in (*DECISIONS, "all"):
        raise ValueError(f"unknown decision rule {decision!r}; choose one of {[*DECISIONS, 'all']}")
    examples = load_examples(data, split="validation", n=n)
    lm = make_lm(lm_spec, api_base=api_base, cache=False)
    threads = 1 if is_embedded(lm) else 8
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
                           if with_occlusion and program.granularity == "full" else None)
        summary, answers, odds = evaluate_program(program, examples, lm, threads=threads,
                                                  occlusion_probe=occlusion_probe)
        row = {**describe_lm(lm), "decision": decision, "value_mode": value_mode, "demos": demos,
               "demo_source": (demo_source if name != "P" else "label") if demos else None, **summary}
        if program.calibration:
            row["calibration"] = program.calibration
        if decision == "all":
            with dspy.context(lm=lm, adapter=adapter):
                free = [label_log_odds(program(review=t)) for t in CONTENT_FREE]
            row["decisions"] = decision_rules(odds, [a.label for a in answers], [e.label for e in examples],
                                              [o for o in free if o is not None])
        report[name] = row
    return report
