"""The ``selfx`` command line. Exit codes: 0 ok, 1 the job failed, 2 bad usage or input."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Sequence

EXAMPLES = """examples:
  selfx check-lm --n 5                       # embedded model, 5 SST-2 sentences
  selfx check-lm --lm local:/models/x.gguf --n 20 --json out.json
  selfx check-lm --lm openai/my-model --api-base http://127.0.0.1:8000/v1
"""


def _version() -> str:
    try:
        return version("selfx")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0+unknown"


def _add_lm_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lm", default="local", metavar="SPEC",
                        help="local (default), local:<name>, local:/path/model.gguf, openai/<model>")
    parser.add_argument("--api-base", default=None, metavar="URL",
                        help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfx", description="Can LLMs explain themselves? Typed DSPy programs, faithfulness "
        "metrics, optimisation and MLflow tracking.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"selfx {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser(
        "check-lm", help="typed round trip (label, confidence) on the first N SST-2 validation sentences",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_lm_args(check)
    check.add_argument("--n", type=int, default=10, help="number of sentences (default 10)")
    check.add_argument("--data", default="sst2", help="sst2 (default), huang2023, a .jsonl/.csv file or a dataset")
    check.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    check.set_defaults(func=_cmd_check_lm)

    evaluate = commands.add_parser(
        "evaluate", help="run programs (P, PE, EP, PE-topk, EP-topk) on a dataset and summarise",
        epilog="examples:\n  selfx evaluate --program all --n 200 --json eval.json\n"
               "  selfx evaluate --program PE,EP --value-mode expected --n 50",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_lm_args(evaluate)
    evaluate.add_argument("--program", default="all", help="P, PE, EP, PE-topk, EP-topk, a comma list, or all")
    evaluate.add_argument("--data", default="sst2", help="sst2 (default), huang2023, a .jsonl/.csv file or a dataset")
    evaluate.add_argument("--n", type=int, default=20, help="number of examples (default 20)")
    evaluate.add_argument("--value-mode", default=None, choices=["sample", "expected"],
                          help="how importances are read: expected needs an embedded model (default: the default "
                               "setup's on embedded models, sample on API models)")
    evaluate.add_argument("--demos", type=int, default=None,
                          help="few-shot demos: gold labels for P, teacher (own-occlusion) demos for P-E/E-P "
                               "(default: the embedded default setup's, 0 for API models)")
    evaluate.add_argument("--demo-source", default="occlusion", choices=["occlusion", "self"],
                          help="explanations in P-E/E-P demos: the model's own occlusion (default) or its own "
                               "bootstrapped self-explanations")
    evaluate.add_argument("--with-occlusion", action="store_true",
                          help="also correlate full explanations with the model's own occlusion (probe, cached)")
    evaluate.add_argument("--faithfulness", action="store_true",
                          help="also measure the explanations' faithfulness (ERASER-bin comprehensiveness and "
                               "sufficiency, decision flip, deletion-rank correlation; corrected mode, logprob "
                               "probe, cached) beside occlusion and a random explanation, with the Spearman "
                               "correlation with occlusion")
    evaluate.add_argument("--decision", default=None,
                          choices=["generated", "logprob", "contextual", "batch", "all"],
                          help="label decision rule; all = every rule side by side from one pass "
                               "(default: the embedded default setup's, generated for API models)")
    evaluate.add_argument("--json", metavar="FILE", help="also write the report (keyed by program) as JSON")
    evaluate.set_defaults(func=_cmd_evaluate)

    replay = commands.add_parser(
        "replay", help="recompute the study's faithfulness and agreement tables from its recorded outputs",
        epilog="examples:\n  selfx replay --model llama3 --mode compat\n"
               "  selfx replay --model gpt4o --mode corrected --json gpt4o.json --out results/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    replay.add_argument("--model", choices=["llama3", "gpt4o"], help="whose recorded outputs to replay")
    replay.add_argument("--mode", default="corrected", choices=["compat", "corrected"])
    replay.add_argument("--out", default="results", metavar="DIR", help="where CSV and markdown go (default results/)")
    replay.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    replay.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlruns/mlflow.db)")
    replay.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    replay.add_argument("--differences", metavar="FILE",
                        help="instead, write the compat-vs-corrected switch table (markdown) for both models")
    replay.set_defaults(func=_cmd_replay)

    study = commands.add_parser(
        "study", help="the study's faithfulness and agreement tables, end to end on a live model (cached)",
        epilog="examples:\n  selfx study --n 100                      # embedded model, the study's 100 sentences\n"
               "  selfx study --n 10 --lime-samples 2 --mode compat",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_lm_args(study)
    study.add_argument("--data", default="huang2023", help="huang2023 (default), sst2, a file or a dataset")
    study.add_argument("--n", type=int, default=100, help="number of sentences (default 100)")
    study.add_argument("--mode", default="corrected", choices=["compat", "corrected"])
    study.add_argument("--probe", default="logprob", choices=["logprob", "predict-only", "same-program"],
                       help="how perturbed texts are scored (default logprob: one forward pass)")
    study.add_argument("--value-mode", default=None, choices=["sample", "expected"],
                       help="how importances are read (default: expected on embedded models, sample on API models)")
    study.add_argument("--lime-samples", type=int, default=10, help="LIME samples per token (default 10)")
    study.add_argument("--cache", default=".selfx-cache/probe.sqlite", metavar="FILE",
                       help="the probe's answer cache (default .selfx-cache/probe.sqlite)")
    study.add_argument("--out", default="results", metavar="DIR")
    study.add_argument("--json", metavar="FILE")
    study.add_argument("--tracking-uri", default=None)
    study.add_argument("--no-mlflow", action="store_true")
    study.set_defaults(func=_cmd_study)

    run = commands.add_parser(
        "run", help="evaluate every variant of an experiment config, one nested MLflow run per variant",
        epilog="examples:\n  selfx run                                # experiments/configs/quick.yaml\n"
               "  selfx run experiments/configs/paper.yaml --tracking-uri http://127.0.0.1:5000",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", nargs="?", default=None, help="a YAML config (default: the shipped quick.yaml)")
    run.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlruns/mlflow.db)")
    run.add_argument("--json", metavar="FILE")
    run.add_argument("--fresh", action="store_true",
                     help="start a new parent run even if an interrupted run of this config can be resumed")
    run.set_defaults(func=_cmd_run)

    optimize = commands.add_parser(
        "optimize", help="multi-objective Optuna study (NSGA-II) over the variant space; Pareto front in MLflow",
        epilog="examples:\n  selfx optimize                           # experiments/configs/quick.yaml\n"
               "  selfx optimize my.yaml --json pareto.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    optimize.add_argument("config", nargs="?", default=None, help="a YAML config (default: quick.yaml)")
    optimize.add_argument("--tracking-uri", default=None)
    optimize.add_argument("--json", metavar="FILE")
    optimize.set_defaults(func=_cmd_optimize)

    export = commands.add_parser(
        "export", help="export the best variant run (by a metric) or a chosen run as readable, reusable files",
        epilog="examples:\n  selfx export --experiment selfx-quick --metric accuracy --out exported/\n"
               "  selfx export --run-id 0123abcd --out exported/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("--experiment", default="selfx-quick", help="MLflow experiment (default selfx-quick)")
    export.add_argument("--metric", default="accuracy", help="pick the run with the highest value of this metric")
    export.add_argument("--run-id", default=None, help="export this run instead (e.g. a Pareto point)")
    export.add_argument("--out", default="exported", metavar="DIR")
    export.add_argument("--tracking-uri", default=None)
    export.set_defaults(func=_cmd_export)

    ui = commands.add_parser("ui", help="start the MLflow UI on the project's tracking store and print its URL")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--tracking-uri", default=None)
    ui.set_defaults(func=_cmd_ui)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from experiments.config import load_config
    from experiments.run import run_experiment

    config = load_config(args.config)
    result = run_experiment(config, uri=args.tracking_uri, resume=not args.fresh)
    for item in result["variants"]:
        m = item["metrics"]
        extra = "" if m.get("comprehensiveness_bins") is None else f"  comp_bins {m['comprehensiveness_bins']:.3f}"
        acc = "n/a" if m.get("accuracy") is None else f"{m['accuracy']:.3f}"
        kept = "  (kept from the interrupted run)" if item.get("resumed") else ""
        print(f"{item['variant']:<50} accuracy {acc}{extra}  run {item['run_id']}{kept}")
    print(f"experiment {result['experiment']}, parent run {result['parent_run_id']}; open it with: selfx ui")
    _write_json(args.json, result)
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    from experiments.config import load_config
    from experiments.optimize import optimize

    result = optimize(load_config(args.config), uri=args.tracking_uri)
    print(f"study {result['study']}: {result['trials']} trials; Pareto front:")
    for point in result["pareto"]:
        print(f"  trial {point['number']}: {point['values']}  run {point['run_id']}")
    print("held-out test slice (95 % CI; paired differences against the paper variant):")
    for label, row in result["held_out"].items():
        print(f"  {label:<12} {row['variant']:<45} accuracy {_with_ci(row, 'accuracy')}  comprehensiveness_bins "
              f"{_with_ci(row, 'comprehensiveness_bins')}  (random {_fmt(row.get('random_comprehensiveness_bins'))})")
        for objective in ("accuracy", "comprehensiveness"):
            diff = row.get(f"vs_paper_{objective}")
            if diff:
                verdict = "beats the paper variant" if row["beats_paper"][objective] else "does not beat it"
                print(f"      vs paper, {objective}: {_fmt(diff['difference'])} "
                      f"[{_fmt(diff['ci_low'])}, {_fmt(diff['ci_high'])}] on {diff['n']} sentences: {verdict}")
    print(f"MLflow experiment {result['experiment']}, parent run {result['parent_run_id']}; selfx ui to browse")
    _write_json(args.json, result)
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _with_ci(row: dict[str, Any], key: str) -> str:
    return f"{_fmt(row.get(key))} [{_fmt(row.get(key + '_ci_low'))}, {_fmt(row.get(key + '_ci_high'))}]"


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from experiments.export import export_run, find_run
    from programs.lm import make_lm

    run = find_run(args.experiment, metric=args.metric, run_id=args.run_id, uri=args.tracking_uri)
    lm = make_lm(run.data.params.get("lm_spec", "local"), cache=False)
    result = export_run(run, Path(args.out), lm)
    print(f"exported {result['variant']} (run {result['run_id']}) to {args.out}: {', '.join(result['files'])}")
    print(f"registered as {result['prompt']}")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from experiments.tracking import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    url = f"http://127.0.0.1:{args.port}"
    print(f"MLflow UI for {uri} at {url} (Ctrl-C to stop)", flush=True)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                            "--port", str(args.port), "--workers", "1"], env=env)


def _cmd_study(args: argparse.Namespace) -> int:
    from pathlib import Path

    from experiments.replay import markdown_tables, write_outputs
    from experiments.study import live_study
    from programs.lm import supports_expected_values

    args.value_mode = args.value_mode or ("expected" if supports_expected_values(args.lm, args.api_base) else "sample")
    report = live_study(lm_spec=args.lm, api_base=args.api_base, data=args.data, n=args.n, mode_name=args.mode,
                        probe_mode=args.probe, value_mode=args.value_mode, lime_samples_per_token=args.lime_samples,
                        cache_path=args.cache)
    print(markdown_tables(report))
    print(f"wall time {report['wall_seconds']:.1f} s; probe: {report['probe_stats']}")
    files = write_outputs(report, Path(args.out))
    _write_json(args.json, report)
    if not args.no_mlflow:
        from experiments.tracking import log_run

        metrics = {f"{table}/{config}/{metric}": row[metric] for table in ("faithfulness", "agreement")
                   for config, row in report[table].items() for metric in row}
        metrics.update({f"probe/{order}/{k}": v for order, stats in report["probe_stats"].items()
                        for k, v in stats.items()})
        metrics["wall_seconds"] = report["wall_seconds"]
        params = {k: report[k] for k in ("backend", "model", "mode", "data", "n_sentences", "probe_mode",
                                         "p_source", "value_mode")}
        run_id = log_run("selfx-study", f"study {report['model']} {args.mode}", params=params, metrics=metrics,
                         artifacts=files, uri=args.tracking_uri)
        print(f"logged to MLflow run {run_id}", file=sys.stderr)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from experiments.replay import (
        ablation_markdown,
        markdown_tables,
        replay_study,
        switch_ablation,
        write_outputs,
    )

    if args.differences:
        text = ablation_markdown({m: switch_ablation(m) for m in ("llama3", "gpt4o")})
        Path(args.differences).write_text(text, encoding="utf-8")
        print(f"wrote {args.differences}")
        return 0
    if not args.model:
        raise ValueError("selfx replay needs --model llama3 or --model gpt4o (or --differences FILE)")
    report = replay_study(args.model, args.mode)
    print(markdown_tables(report))
    files = write_outputs(report, Path(args.out))
    _write_json(args.json, report)
    if not args.no_mlflow:
        from experiments.tracking import log_run

        metrics = {f"{table}/{config}/{metric}": row[metric] for table in ("faithfulness", "agreement")
                   for config, row in report[table].items() for metric in row}
        run_id = log_run("selfx-replay", f"replay {args.model} {args.mode}",
                         params={"model": args.model, "mode": args.mode, "backend": "replay"},
                         metrics=metrics, artifacts=files, uri=args.tracking_uri)
        print(f"logged to MLflow run {run_id}", file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from experiments.evaluate import evaluate
    from programs.embedded_models import DEFAULT_SETUP
    from programs.lm import parse_lm_spec

    embedded = parse_lm_spec(args.lm, args.api_base).backend == "local"
    args.demos = args.demos if args.demos is not None else (DEFAULT_SETUP.demos if embedded else 0)
    args.decision = args.decision or (DEFAULT_SETUP.decision if embedded else "generated")
    args.value_mode = args.value_mode or (DEFAULT_SETUP.value_mode if embedded else "sample")
    report = evaluate(args.program, data=args.data, n=args.n, lm_spec=args.lm, api_base=args.api_base,
                      value_mode=args.value_mode, decision=args.decision, demos=args.demos,
                      demo_source=args.demo_source,
                      with_occlusion=args.with_occlusion, faithfulness=args.faithfulness)
    columns = ["accuracy", "parse_failure_rate", "token_coverage", "seconds_per_example", "tokens_per_example", "n"]
    print(f"{'program':<9}" + "".join(f"{c:>20}" for c in columns))
    for name, row in report.items():
        cells = "".join(f"{row[c]:>20.4f}" if isinstance(row[c], float) else f"{str(row[c]):>20}" for c in columns)
        print(f"{name:<9}{cells}")
        for rule, scores in row.get("decisions", {}).items():
            shown = ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float))
            print(f"  decision {rule:<11} {shown or scores}")
        if "explanation_nondegenerate_rate" in row:
            print(f"  explanations: non-degenerate {_fmt(row['explanation_nondegenerate_rate'])}, range violations "
                  f"{row['explanation_range_violations']}, median {_fmt(row['seconds_per_example_median'])} s"
                  + (f", Spearman vs occlusion {_with_ci(row, 'spearman_vs_occlusion')}"
                     if "spearman_vs_occlusion" in row else ""))
        if "comprehensiveness_bins" in row:
            for key in ("comprehensiveness_bins", "sufficiency_bins"):
                print(f"  {key}: self {_with_ci(row, key)}, random {_with_ci(row, 'random_' + key)}, "
                      f"occlusion {_with_ci(row, 'occlusion_' + key)}")
    _write_json(args.json, report)
    return 0


def _cmd_check_lm(args: argparse.Namespace) -> int:
    from experiments.check_lm import check_lm

    summary = check_lm(args.lm, api_base=args.api_base, n=args.n, data=args.data)
    shown = {k: v for k, v in summary.items() if k != "failures"}
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    for failure in summary["failures"]:
        print(f"parse failure on example {failure['id']}: {failure['reason']}", file=sys.stderr)
    _write_json(args.json, summary)
    return 0


def _write_json(path: str | None, payload: Any) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: skip MLflow/LiteLLM downloads
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from experiments.config import ConfigError
    from experiments.export import ExportError
    from programs.data import DataError
    from programs.lm import LMSpecError

    try:
        return args.func(args)
    except (DataError, LMSpecError, ConfigError, ExportError, FileNotFoundError, ValueError) as exc:
        if args.debug:
            raise
        print(f"selfx {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one clear line; --debug shows the traceback
        if args.debug:
            raise
        print(f"selfx {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
