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
    # imported here: the measurement module (numpy, metrics) is loaded by then, and the CLI starts without it
    from experiments.measure import PAIRED_BASELINES, SHARES_OF_OCCLUSION, kind_key

    columns = ["accuracy", "parse_failure_rate", "token_coverage", "seconds_per_example", "tokens_per_example", "n"]
    print(f"{'program':<9}" + "".join(f"{c:>20}" for c in columns))
    for name, row in report.items():
        cells = "".join(f"{row[c]:>20.4f}" if isinstance(row[c], float) else f"{str(row[c]):>20}" for c in columns)
        print(f"{name:<9}{cells}")
        for rule, scores in row.get("decisions", {}).items():
            shown = ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float))
            print(f"  decision {rule:<11} {shown or scores}")
        if "injection_flip_rate" in row:
            print(f"  injected reviews: label flips {with_ci(row, 'injection_flip_rate')}, to the injected label "
                  f"{with_ci(row, 'injection_to_target_rate')}; accuracy {fmt(row['accuracy'])} injected, "
                  f"{fmt(row['clean_accuracy'])} clean")
        if "explanation_nondegenerate_rate" in row:
            print(f"  explanations: non-degenerate {fmt(row['explanation_nondegenerate_rate'])}, range violations "
                  f"{row['explanation_range_violations']}, median {fmt(row['seconds_per_example_median'])} s"
                  + (f", Spearman vs occlusion {with_ci(row, 'spearman_vs_occlusion')}"
                     if "spearman_vs_occlusion" in row else ""))
        if "comprehensiveness_bins" in row:
            baselines = [b for b in ("random", "occlusion", "lime", "lexicon") if f"{b}_comprehensiveness_bins" in row]
            for key in ("comprehensiveness_bins", "sufficiency_bins"):
                print(f"  {key}: self {with_ci(row, key)}"
                      + "".join(f", {b} {with_ci(row, f'{b}_{key}')}" for b in baselines))
            for b in PAIRED_BASELINES:
                if f"comprehensiveness_bins_vs_{b}" in row:
                    print(f"  self - {b} (paired): {with_ci(row, f'comprehensiveness_bins_vs_{b}')}, "
                          f"p = {fmt(row[f'comprehensiveness_bins_vs_{b}_p_value'])}")
            for kind in SHARES_OF_OCCLUSION:
                key = kind_key(kind, "comprehensiveness_bins_share_of_occlusion")
                if key in row:
                    print(f"  {kind} / occlusion: {with_ci(row, key)}")


def where(result: Mapping[str, Any], tracking_uri: str | None) -> None:
    """The closing lines of run, optimize and study: where the results are and how to look at them."""
    uri = f" --tracking-uri {tracking_uri}" if tracking_uri else ""
    print(f"\nMLflow experiment {result['experiment']}, run {result['parent_run_id']}")
    if result.get("report"):
        print(f"report: {result['report']}")
    print(f"look at it:  selfx ui{uri}    (then open http://127.0.0.1:5000 and the experiment)")
    print(f"             selfx report {result['parent_run_id']}{uri}")


def run(result: Mapping[str, Any]) -> None:
    print(f"{'variant':<52}{'accuracy':>22}{'comprehensiveness':>24}{'vs random':>12}")
    for item in result["variants"]:
        m = item["metrics"]
        kept = "  (kept from the interrupted run)" if item.get("resumed") else ""
        print(f"{item['variant']:<52}{with_ci(m, 'accuracy'):>22}{with_ci(m, 'comprehensiveness_bins'):>24}"
              f"{fmt(m.get('comprehensiveness_bins_vs_random')):>12}{kept}")
    if result.get("best"):
        print("best: " + "; ".join(f"{metric} {name}" for metric, name in result["best"].items()))


def optimize(result: Mapping[str, Any]) -> None:
    print(f"study {result['study']} in {result['storage']}: {result['trials']} trials ({len(result['failed'])} "
          "failed); Pareto front:")
    if result.get("lost_workers"):
        print(f"  {len(result['lost_workers'])} worker process(es) ended abnormally (exit codes "
              f"{result['lost_workers']}); their trials were failed and run again by the others")
    for failure in result["failed"]:
        where = f" (worker {failure['worker']})" if failure.get("worker") else ""
        print(f"  trial {failure['number']} failed{where}: {failure['failure'] or 'no reason recorded (killed?)'}")
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
    if result.get("summary"):
        print(result["summary"])


def study(report: Mapping[str, Any]) -> None:
    """The study's headline: each order's self-explanation beside random, occlusion and LIME."""
    print(f"\n{report['model']}, {report['n_sentences']} sentences, {report['mode']} mode, "
          f"probe {report['probe_mode']}: {report['wall_seconds']:.0f} s")
    probe_failures = sum(stats.get("failures", 0) for stats in report["probe_stats"].values())
    print(f"  failed answers (counted, excluded): programs {sum(report['program_failures'].values())}, "
          f"probes {probe_failures} of {sum(s.get('model_calls', 0) for s in report['probe_stats'].values())} calls")
    for order in ("P-E", "E-P"):
        cells = [f"{kind} {fmt(report['faithfulness'][f'{order} {kind}'].get('comprehensiveness_bins'))}"
                 for kind in ("self", "random", "occlusion", "lime") if f"{order} {kind}" in report["faithfulness"]]
        print(f"  {order} comprehensiveness (ERASER bins): " + ", ".join(cells))
