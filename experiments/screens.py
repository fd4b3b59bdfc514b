"""What each command prints when it ends: tables and summaries on stdout, notes on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def with_ci(row: Mapping[str, Any], key: str) -> str:
    return f"{fmt(row.get(key))} [{fmt(row.get(key + '_ci_low'))}, {fmt(row.get(key + '_ci_high'))}]"


def write_json(path: str | None, payload: Any) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")


def check_lm(summary: Mapping[str, Any]) -> None:
    shown = {k: v for k, v in summary.items() if k != "failures"}
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    for failure in summary["failures"]:
        print(f"parse failure on example {failure['id']}: {failure['reason']}", file=sys.stderr)


def evaluate(report: Mapping[str, Mapping[str, Any]]) -> None:
    columns = ["accuracy", "parse_failure_rate", "token_coverage", "seconds_per_example", "tokens_per_example", "n"]
    print(f"{'program':<9}" + "".join(f"{c:>20}" for c in columns))
    for name, row in report.items():
        cells = "".join(f"{row[c]:>20.4f}" if isinstance(row[c], float) else f"{str(row[c]):>20}" for c in columns)
        print(f"{name:<9}{cells}")
        for rule, scores in row.get("decisions", {}).items():
            shown = ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float))
            print(f"  decision {rule:<11} {shown or scores}")
        if "explanation_nondegenerate_rate" in row:
            print(f"  explanations: non-degenerate {fmt(row['explanation_nondegenerate_rate'])}, range violations "
                  f"{row['explanation_range_violations']}, median {fmt(row['seconds_per_example_median'])} s"
                  + (f", Spearman vs occlusion {with_ci(row, 'spearman_vs_occlusion')}"
                     if "spearman_vs_occlusion" in row else ""))
        if "comprehensiveness_bins" in row:
            for key in ("comprehensiveness_bins", "sufficiency_bins"):
                print(f"  {key}: self {with_ci(row, key)}, random {with_ci(row, 'random_' + key)}, "
                      f"occlusion {with_ci(row, 'occlusion_' + key)}")


def run(result: Mapping[str, Any]) -> None:
    for item in result["variants"]:
        m = item["metrics"]
        extra = "" if m.get("comprehensiveness_bins") is None else f"  comp_bins {m['comprehensiveness_bins']:.3f}"
        acc = "n/a" if m.get("accuracy") is None else f"{m['accuracy']:.3f}"
        kept = "  (kept from the interrupted run)" if item.get("resumed") else ""
        print(f"{item['variant']:<50} accuracy {acc}{extra}  run {item['run_id']}{kept}")
    print(f"experiment {result['experiment']}, parent run {result['parent_run_id']}; open it with: selfx ui")


def optimize(result: Mapping[str, Any]) -> None:
    print(f"study {result['study']}: {result['trials']} trials; Pareto front:")
    for point in result["pareto"]:
        print(f"  trial {point['number']}: {point['values']}  run {point['run_id']}")
    print("held-out test slice (95 % CI; paired differences against the paper variant):")
    for label, row in result["held_out"].items():
        print(f"  {label:<12} {row['variant']:<45} accuracy {with_ci(row, 'accuracy')}  comprehensiveness_bins "
              f"{with_ci(row, 'comprehensiveness_bins')}  (random {fmt(row.get('random_comprehensiveness_bins'))})")
        for objective in ("accuracy", "comprehensiveness"):
            diff = row.get(f"vs_paper_{objective}")
            if diff:
                verdict = "beats the paper variant" if row["beats_paper"][objective] else "does not beat it"
                print(f"      vs paper, {objective}: {fmt(diff['difference'])} "
                      f"[{fmt(diff['ci_low'])}, {fmt(diff['ci_high'])}] on {diff['n']} sentences: {verdict}")
    print(f"MLflow experiment {result['experiment']}, parent run {result['parent_run_id']}; selfx ui to browse")
