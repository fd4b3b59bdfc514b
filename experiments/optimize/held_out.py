"""The chosen trade-offs against the study's paper variant on held-out sentences, with paired tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from experiments.config import PAPER, ExperimentConfig, Variant
from experiments.variants import build_program, evaluate_variant, load_program
from metrics.stats import paired_accuracy, paired_difference
from programs.probe_cache import ProbeCache
from programs.types import Example

MINIMISE = {"sufficiency_bins"}
SHOWN = ("accuracy", "comprehensiveness", "sufficiency_bins", "parse_failure", "random_comprehensiveness",
         "seconds_per_example")


def best_per_objective(front: Sequence[Any], objectives: Sequence[str]) -> dict[int, Any]:
    """The Pareto trials that are best on dev for each objective (at most one per objective)."""
    best: dict[int, Any] = {}
    for i, objective in enumerate(objectives):
        finite = [t for t in front if t.user_attrs.get("variant") and abs(t.values[i]) != float("inf")]
        if finite:
            pick = (min if objective in MINIMISE else max)(finite, key=lambda t: t.values[i])
            best[pick.number] = pick
    return best


def held_out(front: Sequence[Any], objectives: Sequence[str], config: ExperimentConfig, lm: Any,
             dev: Sequence[Example], test: Sequence[Example], cache: ProbeCache,
             log: Callable[[str, Variant, Any, Any], str] | None = None) -> dict[str, Any]:
    """The paper variant against the optimised programs on the held-out test slice.

    The candidates are :func:`best_per_objective` (so the held-out cost stays bounded), each reloaded from
    its MLflow run exactly as compiled. Each is measured on the test slice with CIs and compared with the
    paper variant on the same sentences: a paired difference and McNemar's exact test for accuracy, a paired
    difference for comprehensiveness; ``beats_paper`` says where the paired 95 % CI lies above zero.
    ``log(label, variant, program, evaluation)`` records each candidate's evaluation (a nested run) and
    returns its run id.
    """
    candidates: list[tuple[str, Variant, Any, str | None]] = [("paper", PAPER, None, None)] + [
        (f"pareto#{number}", Variant(**t.user_attrs["variant"]), t.values, t.user_attrs.get("run_id"))
        for number, t in sorted(best_per_objective(front, objectives).items())]
    measured: dict[str, Any] = {}
    per_example: dict[str, dict[str, list[float | None]]] = {}
    for label, variant, dev_values, run_id in candidates:
        program = (build_program(variant, lm, dev, cache, config.seed) if run_id is None else
                   load_program(variant, run_id))
        evaluation = evaluate_variant(program, variant, lm, test, config, cache)
        metrics, rows = evaluation.metrics, evaluation.rows
        measured[label] = {"variant": variant.name, "run_id": log(label, variant, program, evaluation) if log else None,
                           **({"dev_objectives": dict(zip(objectives, dev_values, strict=True))} if dev_values else {}),
                           **{k: v for k, v in metrics.items() if k.startswith(SHOWN)}}
        per_example[label] = {
            "accuracy": [None if r["prediction"] is None else float(r["prediction"] == r["gold"]) for r in rows],
            "comprehensiveness": [r["comprehensiveness_bins"] for r in rows],
        }
    paper = per_example["paper"]
    for label, values in per_example.items():
        if label == "paper":
            continue
        # the paired bootstrap's p stays ``p_value`` (as for comprehensiveness); McNemar's exact test beside it
        vs_accuracy = paired_accuracy(values["accuracy"], paper["accuracy"], seed=config.seed)
        vs_accuracy["only_candidate_correct"] = vs_accuracy.pop("only_a_correct")
        vs_accuracy["only_paper_correct"] = vs_accuracy.pop("only_b_correct")
        vs_comp = paired_difference(values["comprehensiveness"], paper["comprehensiveness"], seed=config.seed)
        measured[label]["vs_paper_accuracy"] = vs_accuracy
        measured[label]["vs_paper_comprehensiveness"] = vs_comp
        measured[label]["beats_paper"] = {
            "accuracy": vs_accuracy["ci_low"] is not None and vs_accuracy["ci_low"] > 0,
            "comprehensiveness": vs_comp["ci_low"] is not None and vs_comp["ci_low"] > 0}
    return measured
