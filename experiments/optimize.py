"""``selfx optimize CONFIG``: a multi-objective Optuna study (NSGA-II) over the variant space, with
DSPy optimisers as one of its dimensions; every trial is a nested MLflow run.

Objectives are measured on the dev slice: accuracy, and faithfulness as ERASER-bin
comprehensiveness on a dev sample through the cached probe (about 10 probe texts per sentence).
The study lives in SQLite storage, so an interrupted study resumes where it stopped. At the end the
Pareto front and the paper variant are evaluated on the held-out test slice with 95 % CIs and
paired tests, and a Pareto plot is logged.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import dspy

from experiments.config import ExperimentConfig, Variant
from experiments.faithfulness_run import sentence_faithfulness, values_and_ranking
from experiments.run import adapter_for, build_program, evaluate_variant, log_variant
from experiments.tracking import use_experiment
from metrics.modes import metric_mode
from metrics.stats import mcnemar, mean_ci, paired_bootstrap
from programs.lm import make_lm
from programs.probe import ProgramProbe
from programs.probe_cache import ProbeCache
from programs.readout import to_answer, to_attribution
from programs.self_explain import SentimentProgram
from programs.types import Example

MINIMISE = {"sufficiency_bins"}
PAPER = Variant(program="PE", demos=0, decision="generated", value_mode="sample", adapter="lean")


def accuracy_metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
    """DSPy metric: 1 for the gold label; a failed answer scores 0 (and is counted elsewhere)."""
    return float(getattr(prediction, "label", None) == example.label)


def compile_with(optimizer: str, program: SentimentProgram, train: Sequence[Example], lm: Any, seed: int) -> SentimentProgram:
    """Run a DSPy optimiser on the program (accuracy metric on the train pool)."""
    if optimizer == "none":
        return program
    trainset = [dspy.Example(review=e.text, label="positive" if e.label else "negative").with_inputs("review")
                for e in train]
    if not trainset:
        raise ValueError(f"optimizer {optimizer!r} needs a train pool: set data.train_n > 0")
    if optimizer == "bootstrap":
        teleprompter = dspy.BootstrapFewShot(metric=accuracy_metric, max_bootstrapped_demos=3, max_labeled_demos=3)
    elif optimizer == "random-search":
        teleprompter = dspy.BootstrapFewShotWithRandomSearch(metric=accuracy_metric, max_bootstrapped_demos=3,
                                                             max_labeled_demos=3, num_candidate_programs=4,
                                                             num_threads=1)
    elif optimizer == "mipro":
        teleprompter = dspy.MIPROv2(metric=accuracy_metric, auto="light", num_threads=1, seed=seed,
                                    max_bootstrapped_demos=3, max_labeled_demos=3)
    elif optimizer == "gepa":
        teleprompter = dspy.GEPA(metric=gepa_feedback, auto="light", reflection_lm=lm, seed=seed)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    compiled = teleprompter.compile(program, trainset=trainset)
    compiled.calibration = program.calibration
    return compiled


def gepa_feedback(gold: dspy.Example, prediction: dspy.Prediction, trace: Any = None, pred_name: str | None = None,
                  pred_trace: Any = None) -> dspy.Prediction:
    """Score and textual feedback for GEPA: whether the label was right and which words it leaned on."""
    right = getattr(prediction, "label", None) == gold.label
    feedback = f"The gold label is {gold.label}; the program said {getattr(prediction, 'label', None)}."
    explanation = getattr(prediction, "explanation", None) or []
    if explanation:
        strongest = sorted(explanation, key=lambda pair: -abs(pair[1]))[:3]
        feedback += " Its strongest words were " + ", ".join(f"{w} ({v:+.1f})" for w, v in strongest) + "."
    return dspy.Prediction(score=float(right), feedback=feedback)


def dev_objectives(program: SentimentProgram, variant: Variant, lm: Any, dev: Sequence[Example],
                   config: ExperimentConfig, cache: ProbeCache) -> dict[str, float | None]:
    """Accuracy on dev and ERASER-bin faithfulness on a dev sample (cached probe); cost reported."""
    mode = metric_mode(config.measure.mode)
    with dspy.context(lm=lm, adapter=adapter_for(variant.adapter)):
        predictions = [program(review=e.text) for e in dev]
    answers = [to_answer(p) for p in predictions]
    scored = [a for a in answers if a.ok]
    out: dict[str, float | None] = {
        "accuracy": (sum(a.label_int == e.label for a, e in zip(answers, dev) if a.ok) / len(scored)) if scored else None,
        "parse_failure_rate": 1 - len(scored) / len(dev),
    }
    if program.granularity is None:
        return {**out, "comprehensiveness_bins": None, "sufficiency_bins": None}
    probe = ProgramProbe(SentimentProgram("P"), lm, mode=config.measure.probe, cache=cache)
    source = "logprob" if config.measure.probe == "logprob" else "stated"
    sample = list(zip(dev, predictions))[: config.measure.faithfulness_n]
    originals = probe.answers([e.text for e, _ in sample])
    calls = probe.stats.model_calls
    rows = []
    for i, ((example, prediction), original) in enumerate(zip(sample, originals)):
        attribution = to_attribution(prediction, example.text)
        if attribution is None:
            continue
        values, ranking = values_and_ranking(attribution, len(example.tokens))
        rows.append(sentence_faithfulness(list(example.tokens), values, ranking, original, probe.answers, mode,
                                          p_source=source, topk_single_step=ranking is not None, seed=i,
                                          bins_only=ranking is None))
    # top-k explanations have no bins: their single-step drop (all k words) stands in, as in run's tables
    topk = program.granularity == "topk"
    out["comprehensiveness_bins"] = mean_ci([r.get("comprehensiveness" if topk else "comprehensiveness_bins")
                                             for r in rows]).mean
    out["sufficiency_bins"] = mean_ci([r.get("sufficiency" if topk else "sufficiency_bins") for r in rows]).mean
    out["objective_probe_calls"] = probe.stats.model_calls - calls
    return out


def optimize(config: ExperimentConfig, *, uri: str | None = None, progress: bool = True) -> dict[str, Any]:
    import optuna

    from experiments.run import splits

    experiment = f"selfx-{config.name}-optimize"
    mlflow = use_experiment(uri or config.tracking_uri, experiment)
    lm = make_lm(config.lm, api_base=config.api_base, cache=True)
    cache = ProbeCache()
    train, dev, test = splits(config)
    objectives = list(config.search.objectives)
    directions = ["minimize" if o in MINIMISE else "maximize" for o in objectives]
    storage = config.search.storage
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=f"selfx-{config.name}", storage=storage, directions=directions,
                                sampler=optuna.samplers.NSGAIISampler(seed=config.seed), load_if_exists=True)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    with mlflow.start_run(run_name=f"{config.name} optimize") as parent:
        mlflow.log_params({"config": config.name, "objectives": ",".join(objectives), "trials": config.search.trials,
                           "space": json.dumps(config.search.space), "storage": storage, "sampler": "NSGA-II"})

        def objective(trial: optuna.Trial) -> tuple[float, ...]:
            choice = {dim: trial.suggest_categorical(dim, list(options)) for dim, options in config.search.space.items()}
            variant = Variant(**choice)
            if progress:
                print(f"trial {trial.number}: {variant.name}", flush=True)
            program = build_program(variant, lm, dev, cache, config.seed)
            with dspy.context(lm=lm, adapter=adapter_for(variant.adapter)):
                program = compile_with(variant.optimizer, program, train, lm, config.seed)
            scores = dev_objectives(program, variant, lm, dev, config, cache)
            rows = [{"review": e.text, "gold": "positive" if e.label else "negative", "prediction": None,
                     "confidence": None, "p_positive": "{}", "importances": "null", "parse_status": "dev"}
                    for e in dev[:1]]
            run_id = log_variant(mlflow, program, variant, lm, config, {**scores, "trial": trial.number}, rows,
                                 parent.info.run_id)
            trial.set_user_attr("run_id", run_id)
            trial.set_user_attr("variant", asdict(variant))
            return tuple(_objective_value(scores.get(o), o) for o in objectives)

        remaining = max(0, config.search.trials - len(done))
        study.optimize(objective, n_trials=remaining, catch=(ValueError,))
        front = study.best_trials
        plot = _pareto_plot(study, objectives, front)
        if plot is not None:
            mlflow.log_artifact(str(plot))
        held_out = _held_out(front, config, lm, dev, test, cache)
        mlflow.log_dict(held_out, "held_out_comparison.json")
    return {"experiment": experiment, "parent_run_id": parent.info.run_id, "study": study.study_name,
            "trials": len(study.trials), "pareto": [{"number": t.number, "values": t.values,
                                                     "variant": t.user_attrs.get("variant"),
                                                     "run_id": t.user_attrs.get("run_id")} for t in front],
            "held_out": held_out}


def _objective_value(value: float | None, objective: str) -> float:
    """A missing objective (no explanation, all failed) is the worst value, never a silent 0.5."""
    if value is None:
        return float("inf") if objective in MINIMISE else float("-inf")
    return float(value)


def _pareto_plot(study: Any, objectives: Sequence[str], front: Sequence[Any]) -> Path | None:
    if len(objectives) != 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [t for t in study.trials if t.values and all(abs(v) != float("inf") for v in t.values)]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([t.values[0] for t in finite], [t.values[1] for t in finite], color="#999", label="trials")
    pareto = sorted([t for t in front if t in finite], key=lambda t: t.values[0])
    ax.plot([t.values[0] for t in pareto], [t.values[1] for t in pareto], "o-", color="#c0392b", label="Pareto front")
    for t in finite:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"{objectives[0]} (dev)")
    ax.set_ylabel(f"{objectives[1]} (dev)")
    ax.set_title(f"{study.study_name}: accuracy vs faithfulness")
    ax.legend()
    path = Path(tempfile.mkdtemp()) / "pareto.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _held_out(front: Sequence[Any], config: ExperimentConfig, lm: Any, dev: Sequence[Example],
              test: Sequence[Example], cache: ProbeCache) -> dict[str, Any]:
    """The paper variant and each Pareto point on the test slice, with CIs and paired tests."""
    from dataclasses import replace

    config = replace(config, measure=replace(config.measure, faithfulness_n=min(config.measure.faithfulness_n, 10)))
    candidates = [("paper", PAPER)] + [(f"pareto#{t.number}", Variant(**t.user_attrs["variant"])) for t in front
                                       if t.user_attrs.get("variant")]
    measured: dict[str, Any] = {}
    per_example: dict[str, list[float | None]] = {}
    for label, variant in candidates:
        program = build_program(variant, lm, dev, cache, config.seed)
        metrics, rows = evaluate_variant(program, variant, lm, test, config, cache)
        measured[label] = {"variant": variant.name, **{k: v for k, v in metrics.items() if k.startswith(
            ("accuracy", "comprehensiveness_bins", "sufficiency_bins", "parse_failure"))}}
        per_example[label] = [None if r["prediction"] is None else float(r["prediction"] == r["gold"]) for r in rows]
    paper = per_example["paper"]
    for label, correct in per_example.items():
        if label == "paper":
            continue
        both = [(a, b) for a, b in zip(correct, paper) if a is not None and b is not None]
        measured[label]["vs_paper_accuracy"] = {**mcnemar([a == 1 for a, _ in both], [b == 1 for _, b in both]),
                                               **paired_bootstrap([a for a, _ in both], [b for _, b in both])}
    return measured
