"""The ``selfx`` command line. Exit codes: 0 ok, 1 the job failed, 2 bad usage or input.

Choices and defaults come from the config models (``experiments/config.py``) and the registries, so a new
decision rule, probe or explainer appears here without touching this file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from experiments import screens
from experiments.config import (
    DEFAULT_CONCURRENCY,
    Decision,
    DemoSource,
    Format,
    MeasureConfig,
    Mode,
    ProbeMode,
    ValueMode,
    choices,
)
from programs.types import InputError, first_line

EXAMPLES = """examples:
  selfx check-lm --n 5                       # embedded model, 5 SST-2 sentences
  selfx check-lm --lm local:/models/x.gguf --n 20 --json out.json
  selfx check-lm --lm openai/my-model --api-base http://127.0.0.1:8000/v1
"""
MEASURE = MeasureConfig()


def _version() -> str:
    try:
        return version("selfx")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0+unknown"


def _command(commands: Any, name: str, help: str, examples: str, func: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help, epilog=f"examples:\n{examples}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def _lm_args(parser: argparse.ArgumentParser, *, concurrency: bool = True) -> None:
    parser.add_argument("--lm", default="local", metavar="SPEC",
                        help="local (default), local:<name>, local:/path/model.gguf, openai/<model>")
    parser.add_argument("--api-base", default=None, metavar="URL",
                        help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    if concurrency:
        parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                            help=f"requests in flight to an API backend (default {DEFAULT_CONCURRENCY}; answers do not "
                                 "depend on it)")


def _data_args(parser: argparse.ArgumentParser, default: str, n: int) -> None:
    parser.add_argument("--data", default=default, metavar="NAME_OR_PATH",
                        help=f"{default} (default), sst2, huang2023, injected (SST-2 reviews carrying "
                             "instructions), a .jsonl/.csv file, a folder of <split>.jsonl files or a shared data "
                             "folder, or a dataset")
    parser.add_argument("--n", type=int, default=n, help=f"number of sentences (default {n})")


def _output_args(parser: argparse.ArgumentParser, *, tables: bool = False, mlflow: bool = True) -> None:
    parser.add_argument("--json", metavar="FILE", help="also write the full result as JSON")
    if tables:
        parser.add_argument("--out", default="results", metavar="DIR",
                            help="where CSV and markdown tables go (default results/)")
    if mlflow:
        parser.add_argument("--tracking-uri", default=None, metavar="URI",
                            help="MLflow tracking URI (default sqlite:///mlruns/mlflow.db)")
    if mlflow and tables:
        parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def _format_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="numeric", choices=choices(Format),
                        help="how full explanations speak: numeric (the study's [-1, 1] per token, the default) or "
                             "polarity (negative / neutral / positive per token)")


def _value_mode_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--value-mode", default=None, choices=choices(ValueMode),
                        help="how importances are read: expected needs an embedded model (default: expected on "
                             "embedded models, sample on API models)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfx", description="Can LLMs explain themselves? Typed DSPy programs, faithfulness "
        "metrics, optimisation and MLflow tracking.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"selfx {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (they also stay off when stderr is "
                                                             "not a terminal)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = _command(commands, "check-lm", "typed round trip (label, confidence) on the first N SST-2 sentences",
                     EXAMPLES.split("\n", 1)[1], _cmd_check_lm)
    _lm_args(check, concurrency=False)
    _data_args(check, "sst2", 10)
    _output_args(check, mlflow=False)

    evaluate = _command(commands, "evaluate", "run programs (P, PE, EP, PE-topk, EP-topk) on a dataset and summarise",
                        "  selfx evaluate --program all --n 200 --json eval.json\n"
                        "  selfx evaluate --program PE,EP --faithfulness --n 50\n"
                        "  selfx evaluate --program PE --format polarity --demo-source lexicon --faithfulness "
                        "--lexicon --n 200", _cmd_evaluate)
    _lm_args(evaluate)
    _data_args(evaluate, "sst2", 20)
    evaluate.add_argument("--skip", type=int, default=0, metavar="N",
                          help="leave out the first N sentences (default 0): e.g. --skip 200 --n 100 is a "
                               "development slice apart from the first 200 held out")
    evaluate.add_argument("--program", default="all", help="P, PE, EP, PE-topk, EP-topk, a comma list, or all")
    _format_arg(evaluate)
    _value_mode_arg(evaluate)
    evaluate.add_argument("--demos", type=int, default=None,
                          help="few-shot demos: gold labels for P, teacher (own-occlusion) demos for P-E/E-P "
                               "(default: the embedded default setup's, 0 for API models)")
    evaluate.add_argument("--demo-source", default="occlusion", choices=choices(DemoSource),
                          help="explanations in P-E/E-P demos: the model's own occlusion (default), a human word "
                               "lexicon's valences (VADER) or its own bootstrapped self-explanations")
    evaluate.add_argument("--demo-seed", type=int, default=0, metavar="S",
                          help="which training reviews become the demos (a seeded draw; default 0): rerun with "
                               "other seeds to see how much a figure owes to the draw")
    evaluate.add_argument("--explanation-samples", type=int, default=0, metavar="K",
                          help="E-P on embedded models: read the label as the mean of its log-odds after K "
                               "explanations sampled at temperature 1 (self-consistency; K + 1 decodes a review; "
                               "default 0: after the greedy explanation only)")
    evaluate.add_argument("--with-occlusion", action="store_true",
                          help="also correlate full explanations with the model's own occlusion (probe, cached)")
    evaluate.add_argument("--faithfulness", action="store_true",
                          help="also measure the explanations' faithfulness (ERASER-bin comprehensiveness and "
                               "sufficiency, decision flip, deletion-rank correlation; corrected mode, cached "
                               "probe) beside occlusion and a random explanation, with the Spearman correlation "
                               "with occlusion")
    evaluate.add_argument("--lime-samples", type=int, default=0, metavar="N",
                          help="with --faithfulness, also LIME as a baseline with N samples per token "
                               "(default 0: no LIME; the study uses "
                               f"{MEASURE.lime_samples_per_token})")
    evaluate.add_argument("--lexicon", action="store_true",
                          help="with --faithfulness, also a human word lexicon's valences (VADER, no model) as a "
                               "reference explanation: the self-explanations paired against it, and its share "
                               "of own occlusion")
    evaluate.add_argument("--probe", default=MEASURE.probe, choices=choices(ProbeMode),
                          help="the decision function --faithfulness and --with-occlusion measure through: the "
                               "program's own label slot (logprob, the default), the program decoded in full "
                               "per text (same-program), or the zero-shot prediction-only program (zero-shot)")
    evaluate.add_argument("--decision", default=None, choices=[*choices(Decision), "all"],
                          help="label decision rule; all = every rule side by side from one pass "
                               "(default: the embedded default setup's, generated for API models)")
    evaluate.add_argument("--shard", default=None, metavar="K/N",
                          help="run only the K-th of N consecutive slices of the --n sentences (calibrated on all "
                               "of them), to split a long evaluation across processes, machines or days; selfx "
                               "merge joins the N --json files into the whole run's report")
    _output_args(evaluate, mlflow=False)

    merge = _command(commands, "merge", "join the --json reports of selfx evaluate --shard K/N into the whole run's",
                     "  selfx evaluate --program PE --faithfulness --n 200 --shard 1/4 --json pe-1.json   # ... 4/4\n"
                     "  selfx merge pe-1.json pe-2.json pe-3.json pe-4.json --json pe.json", _cmd_merge)
    merge.add_argument("shards", nargs="+", metavar="SHARD.json", help="the shards' --json files, each once")
    _output_args(merge, mlflow=False)

    replay = _command(commands, "replay", "recompute the study's faithfulness and agreement tables from its "
                      "recorded outputs", "  selfx replay --model llama3 --mode compat\n"
                      "  selfx replay --differences docs/compat-vs-corrected.md", _cmd_replay)
    replay.add_argument("--model", choices=["llama3", "gpt4o"], help="whose recorded outputs to replay")
    replay.add_argument("--mode", default=MEASURE.mode, choices=choices(Mode))
    replay.add_argument("--differences", metavar="FILE",
                        help="instead, write the compat-vs-corrected switch table (markdown) for both models")
    _output_args(replay, tables=True)

    study = _command(commands, "study", "the study's faithfulness and agreement tables, end to end on a live "
                     "model (cached)", "  selfx study --n 100                      # the study's 100 sentences\n"
                     "  selfx study --n 10 --lime-samples 2 --mode compat", _cmd_study)
    _lm_args(study)
    _data_args(study, "huang2023", 100)
    study.add_argument("--mode", default=MEASURE.mode, choices=choices(Mode))
    study.add_argument("--probe", default=MEASURE.probe, choices=choices(ProbeMode),
                       help=f"how perturbed texts are scored (default {MEASURE.probe}: the explained program's own "
                            "label slot)")
    _format_arg(study)
    _value_mode_arg(study)
    study.add_argument("--lime-samples", type=int, default=MEASURE.lime_samples_per_token,
                       help=f"LIME samples per token (default {MEASURE.lime_samples_per_token})")
    study.add_argument("--cache", default=".selfx-cache/probe.sqlite", metavar="FILE",
                       help="the probe's answer cache (default .selfx-cache/probe.sqlite)")
    _output_args(study, tables=True)

    for name, help, func in (("run", "evaluate every variant of an experiment config, one nested MLflow run per "
                              "variant", _cmd_run),
                             ("optimize", "multi-objective Optuna study (NSGA-II) over the variant space; Pareto "
                              "front and held-out comparison in MLflow", _cmd_optimize)):
        command = _command(commands, name, help, f"  selfx {name}                                # quick.yaml\n"
                           f"  selfx {name} experiments/configs/paper.yaml --json {name}.json", func)
        command.add_argument("config", nargs="?", default=None, help="a YAML config (default: the shipped quick.yaml)")
        _output_args(command)
        if name == "run":
            command.add_argument("--fresh", action="store_true",
                                 help="start a new parent run even if an interrupted run of this config can be resumed")
        if name == "optimize":
            command.add_argument("--storage", default=None, metavar="URL",
                                 help="Optuna storage to create or join the study in (default: the config's "
                                      "search.storage, sqlite:///mlruns/optuna.db); postgresql+psycopg://user@host:"
                                      "port/db lets workers on several machines share one study")
            command.add_argument("--workers", type=int, default=1, metavar="N",
                                 help="worker processes sharing the trials on this machine (default 1)")
            command.add_argument("--probe-cache", default=None, metavar="PATH_OR_URL",
                                 help="the probe's answer cache: a SQLite file (default .selfx-cache/probe.sqlite) "
                                      "or a database URL (default with a PostgreSQL --storage: a table in that "
                                      "database)")

    export = _command(commands, "export", "export the best variant run (by a metric) or a chosen run as readable, "
                      "reusable files", "  selfx export --experiment selfx-quick --metric accuracy --out exported/\n"
                      "  selfx export --run-id 0123abcd --out exported/", _cmd_export)
    export.add_argument("--experiment", default="selfx-quick", help="MLflow experiment (default selfx-quick)")
    export.add_argument("--metric", default="accuracy", help="pick the run with the highest value of this metric")
    export.add_argument("--run-id", default=None, help="export this run instead (e.g. a Pareto point)")
    export.add_argument("--out", default="exported", metavar="DIR")
    export.add_argument("--tracking-uri", default=None, metavar="URI")

    report = _command(commands, "report", "one self-contained HTML page for a run, an experiment or an optimisation "
                      "study: variants with CIs, token heat-maps, trade-off, calibration, agreement, prompts",
                      "  selfx report --experiment selfx-quick-optimize --out quick.html\n  selfx report 0123abcd...",
                      _cmd_report)
    report.add_argument("run_id", nargs="?", default=None, metavar="RUN_ID",
                        help="a run (a parent run shows its variants)")
    report.add_argument("--experiment", default=None, metavar="NAME", help="report the experiment's newest run")
    report.add_argument("--out", default=None, metavar="FILE",
                        help="where the HTML goes (default results/report-*.html)")
    report.add_argument("--tracking-uri", default=None, metavar="URI")
    report.add_argument("--no-log", action="store_true", help="do not log the page to the run")

    bench = _command(commands, "bench", "where the probe's time goes: raw llama.cpp, the probe one text at a time "
                     "and as it runs, the study cold and cached, an API server at concurrency 1 and 4",
                     "  selfx bench --scale quick --json bench.json\n  selfx bench --lm local:smollm2-135m --no-api",
                     _cmd_bench)
    bench.add_argument("--lm", default="local", metavar="SPEC", help="an embedded model (default: the default one)")
    bench.add_argument("--scale", default="quick", choices=["quick", "paper"],
                       help="the study part: quick (10 sentences, default) or paper (the study's 100)")
    bench.add_argument("--no-api", action="store_true", help="skip the API row (it starts a local llama.cpp server)")
    _output_args(bench, tables=True)

    ui = _command(commands, "ui", "start the MLflow UI on the project's tracking store and print its URL",
                  "  selfx ui --port 5000", _cmd_ui)
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--tracking-uri", default=None, metavar="URI")
    return parser


def _cmd_check_lm(args: argparse.Namespace) -> int:
    from experiments.check_lm import check_lm

    summary = check_lm(args.lm, api_base=args.api_base, n=args.n, data=args.data)
    screens.check_lm(summary)
    screens.write_json(args.json, summary)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from experiments.evaluate import evaluate
    from programs.embedded_models import DEFAULT_SETUP
    from programs.lm import parse_lm_spec

    embedded = parse_lm_spec(args.lm, args.api_base).backend == "local"
    report = evaluate(args.program, data=args.data, n=args.n, skip=args.skip, lm_spec=args.lm, api_base=args.api_base,
                      value_mode=args.value_mode or (DEFAULT_SETUP.value_mode if embedded else "sample"),
                      decision=args.decision or (DEFAULT_SETUP.decision if embedded else "generated"),
                      demos=args.demos if args.demos is not None else (DEFAULT_SETUP.demos if embedded else 0),
                      demo_source=args.demo_source, demo_seed=args.demo_seed,
                      explanation_samples=args.explanation_samples,
                      with_occlusion=args.with_occlusion, faithfulness=args.faithfulness, probe_mode=args.probe,
                      format=args.format,
                      lime_samples_per_token=args.lime_samples, lexicon=args.lexicon, concurrency=args.concurrency,
                      shard=_shard(args.shard))
    screens.evaluate(report)
    screens.write_json(args.json, report)
    return 0


def _log_tables(args: argparse.Namespace, report: dict[str, Any], experiment: str, name: str,
                params: dict[str, Any], extra: dict[str, Any], files: list[Path]) -> None:
    if args.no_mlflow:
        return
    from experiments.tracking import flatten_tables, log_run

    run_id = log_run(experiment, name, params=params, metrics={**flatten_tables(report), **extra}, artifacts=files,
                     uri=args.tracking_uri)
    print(f"logged to MLflow run {run_id}", file=sys.stderr)


def _shard(value: str | None) -> tuple[int, int] | None:
    """``--shard K/N`` as (K, N); ``evaluate`` checks the range (1 <= K <= N <= --n)."""
    if value is None:
        return None
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit()):
        raise InputError(f"--shard {value}: give K/N with 1 <= K <= N, e.g. --shard 2/4 for the second of four")
    return int(index), int(count)


def _cmd_merge(args: argparse.Namespace) -> int:
    import json

    from experiments.evaluate import merge

    reports = []
    for path in args.shards:
        try:
            reports.append((path, json.loads(Path(path).read_text(encoding="utf-8"))))
        except FileNotFoundError:
            raise InputError(f"{path}: no such file; pass the --json files of selfx evaluate --shard K/N") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc}); pass the --json files of selfx evaluate --shard "
                             "K/N") from None
    report = merge(reports)
    screens.evaluate(report)
    screens.write_json(args.json, report)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from experiments.replay import ablation_markdown, replay_study, switch_ablation
    from experiments.tables import markdown_tables, write_outputs

    if args.differences:
        text = ablation_markdown({m: switch_ablation(m) for m in ("llama3", "gpt4o")})
        Path(args.differences).write_text(text, encoding="utf-8")
        print(f"wrote {args.differences}")
        return 0
    if not args.model:
        raise InputError("selfx replay needs --model llama3 or --model gpt4o (or --differences FILE)")
    report = replay_study(args.model, args.mode)
    print(markdown_tables(report))
    files = write_outputs(report, Path(args.out))
    screens.write_json(args.json, report)
    _log_tables(args, report, "selfx-replay", f"replay {args.model} {args.mode}",
                {"model": args.model, "mode": args.mode, "backend": "replay"}, {}, files)
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from experiments.study import live_study
    from experiments.tables import markdown_tables, write_outputs
    from programs.lm import supports_expected_values

    value_mode = args.value_mode or ("expected" if supports_expected_values(args.lm, args.api_base) else "sample")
    report = live_study(lm_spec=args.lm, api_base=args.api_base, data=args.data, n=args.n, mode_name=args.mode,
                        probe_mode=args.probe, value_mode=value_mode, lime_samples_per_token=args.lime_samples,
                        cache_path=args.cache, format=args.format, concurrency=args.concurrency)
    print(markdown_tables(report))
    screens.study(report)
    files = write_outputs(report, Path(args.out))
    screens.write_json(args.json, report)
    probe_stats = {f"probe/{order}/{k}": v for order, stats in report["probe_stats"].items() for k, v in stats.items()}
    _log_tables(args, report, "selfx-study", f"study {report['model']} {args.mode}",
                {k: report[k] for k in ("backend", "model", "mode", "data", "n_sentences", "probe_mode", "p_source",
                                        "value_mode")},
                {**probe_stats, **{f"program_failures/{k}": v for k, v in report["program_failures"].items()},
                 "wall_seconds": report["wall_seconds"]}, files)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from experiments.config import load_config
    from experiments.run import run_variants

    config = load_config(args.config)
    result = run_variants(config, uri=args.tracking_uri, resume=not args.fresh)
    screens.run(result)
    result["report"] = str(_report(result["parent_run_id"], args.tracking_uri or config.tracking_uri))
    screens.where(result, args.tracking_uri)
    screens.write_json(args.json, result)
    return 0


def _report(run_id: str, uri: str | None) -> Path:
    from experiments.report import build_report

    return build_report(run_id, uri=uri)


def _cmd_optimize(args: argparse.Namespace) -> int:
    from experiments.config import load_config
    from experiments.optimize import optimize

    config = load_config(args.config)
    result = optimize(config, uri=args.tracking_uri, storage=args.storage, workers=args.workers,
                      probe_cache=args.probe_cache)
    screens.optimize(result)
    result["report"] = str(_report(result["parent_run_id"], args.tracking_uri or config.tracking_uri))
    screens.where(result, args.tracking_uri)
    screens.write_json(args.json, result)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from experiments.report import build_report

    path = build_report(args.run_id, experiment=args.experiment, out=Path(args.out) if args.out else None,
                        uri=args.tracking_uri, log=not args.no_log)
    print(f"wrote {path}" + ("" if args.no_log else " (also logged to the run as an artifact)"))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from experiments.export import export_run
    from experiments.tracking import find_variant_run
    from programs.lm import make_lm, parse_lm_spec

    run = find_variant_run(args.experiment, metric=args.metric, run_id=args.run_id, uri=args.tracking_uri)
    spec = run.data.params.get("lm_spec", "local")
    # only an embedded model renders the prompt through its own chat template; an API model's run is exported
    # without reaching (or needing a key for) the API
    lm = make_lm(spec, cache=False) if parse_lm_spec(spec).backend == "local" else None
    result = export_run(run, Path(args.out), lm)
    print(f"exported {result['variant']} (run {result['run_id']}) to {args.out}: {', '.join(result['files'])}")
    print(f"registered as {result['prompt']}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from experiments.bench import bench, table

    result = bench(args.lm, args.scale, api=not args.no_api)
    print(table(result))
    screens.write_json(args.json, result)
    if not args.no_mlflow:
        from experiments.tracking import log_run

        run_id = log_run("selfx-bench", f"bench {result['model']} {args.scale}",
                         params={"model": result["model"], "scale": args.scale},
                         metrics={k: v for k, v in result.items() if isinstance(v, (int, float))},
                         uri=args.tracking_uri)
        print(f"logged to MLflow run {run_id}", file=sys.stderr)
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from experiments.tracking import open_store, tracking_uri, ui_command

    uri = tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        open_store(uri)
        print(f"{uri.rstrip('/')}/#/experiments?workflowType=machine_learning (the tracking server's own UI)")
        return 0
    print(f"MLflow UI for {tracking_uri(args.tracking_uri)} at http://127.0.0.1:{args.port} (Ctrl-C to stop)",
          flush=True)
    return subprocess.call(ui_command(args.tracking_uri, args.port),
                           env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: skip MLflow/LiteLLM downloads
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from experiments import progress

    progress.QUIET = args.quiet

    try:
        return args.func(args)
    except InputError as exc:  # the user's input: fixable, exit 2
        if args.debug:
            raise
        print(f"selfx {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"selfx {args.command}: interrupted; what finished is kept (run the same command to resume)",
              file=sys.stderr)
        return 130
    except Exception as exc:  # everything else failed the job: one clear line; --debug shows the traceback
        if args.debug:
            raise
        print(f"selfx {args.command}: failed: {type(exc).__name__}: {first_line(exc, None)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
