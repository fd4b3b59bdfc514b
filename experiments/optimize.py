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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import dspy

from experiments.config import ExperimentConfig, Variant
from experiments.evaluate import run_program
from experiments.faithfulness_run import explanation_row, values_and_ranking
from experiments.run import (
    adapter_for,
    build_program,
    calibrate,
    config_digest,
    evaluate_variant,
    log_variant,
)
from experiments.tracking import use_experiment
from metrics.faithfulness import rank_positions
from metrics.modes import metric_mode
from metrics.stats import mcnemar, mean_ci, paired_bootstrap
from programs.lm import make_lm, reflection_lm
from programs.probe import ProgramProbe
from programs.probe_cache import ProbeCache
from programs.readout import to_attribution
from programs.self_explain import SentimentProgram
from programs.types import Example, tokenize

MINIMISE = {"sufficiency_bins"}
PAPER = Variant(program="PE", demos=0, decision="generated", value_mode="sample", adapter="lean")


class OptimizerMetric:
    """The per-example score a DSPy optimiser maximises, chosen by ``search.optimizer_metric``.

    ``accuracy``: 1 for the gold label; ``comprehensiveness``: the ERASER-bin comprehensiveness of
    the example's explanation through the cached probe (0 when there is none: a prediction-only
    program or a failed answer); ``combined``: (1 - w) * correct + w * comprehensiveness. Called
    with GEPA's extra arguments it returns a score with textual feedback that says how the model's
    own prediction moved when the words the explanation ranked highest were deleted.
    """

    def __init__(self, kind: str, weight: float, lm: Any, config: ExperimentConfig, cache: ProbeCache) -> None:
        self.kind, self.weight, self.config = kind, weight, config
        self.mode = metric_mode(config.measure.mode)
        self.source = "logprob" if config.measure.probe == "logprob" else "stated"
        self.probe = (ProgramProbe(SentimentProgram("P"), lm, mode=config.measure.probe, cache=cache)
                      if kind != "accuracy" else None)

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
        attribution = to_attribution(prediction, review)
        if attribution is None:
            return None, []
        tokens = list(tokenize(review))
        values, ranking = values_and_ranking(attribution, len(tokens))
        predicted = int(getattr(prediction, "label", None) == "positive")
        order = ranking or rank_positions(values, predicted=predicted, mode=self.mode)
        ranked = [tokens[i] for i in order[:3]]
        if self.probe is None:
            return None, ranked
        original = self.probe.answers([review])[0]
        row = explanation_row(tokens, values, ranking, original, self.probe.answers, self.mode,
                              p_source=self.source, seed=self.config.seed, bins_only=True)
        return row["comprehensiveness_bins"], ranked


def compile_with(optimizer: str, program: SentimentProgram, train: Sequence[Example], metric: OptimizerMetric,
                 lm: Any, budget: int, seed: int) -> SentimentProgram:
    """Run a DSPy optimiser on the program against ``metric`` on the train pool."""
    if optimizer == "none":
        return program
    trainset = [dspy.Example(review=e.text, label="positive" if e.label else "negative").with_inputs("review")
                for e in train]
    if not trainset:
        raise ValueError(f"optimizer {optimizer!r} needs a train pool: set data.train_n > 0")
    if optimizer == "bootstrap":
        teleprompter = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=3, max_labeled_demos=3)
        return teleprompter.compile(program, trainset=trainset)
    if optimizer == "random-search":
        teleprompter = dspy.BootstrapFewShotWithRandomSearch(metric=metric, max_bootstrapped_demos=3,
                                                             max_labeled_demos=3, num_candidate_programs=4,
                                                             num_threads=1)
        return teleprompter.compile(program, trainset=trainset)
    # MIPROv2 and GEPA propose instructions with an LM; half the pool trains, half validates
    half = max(1, len(trainset) // 2)
    train_part, val_part = trainset[:half], trainset[half:] or trainset[:half]
    if optimizer == "mipro":
        teleprompter = dspy.MIPROv2(metric=metric, auto=None, num_candidates=3, num_threads=1, seed=seed,
                                    max_bootstrapped_demos=2, max_labeled_demos=2, verbose=False)
        # the program-aware and data-aware proposers read source code and summarise the dataset: many
        # long generations a small embedded model cannot make useful; the instruction proposer stays
        return teleprompter.compile(program, trainset=train_part, valset=val_part, num_trials=budget,
                                    minibatch=False, program_aware_proposer=False, data_aware_proposer=False)
    if optimizer == "gepa":
        teleprompter = dspy.GEPA(metric=metric, max_metric_calls=budget, reflection_lm=reflection_lm(lm), seed=seed,
                                 reflection_minibatch_size=2, track_stats=False)
        return teleprompter.compile(program, trainset=train_part, valset=val_part)
    raise ValueError(f"unknown optimizer {optimizer!r}")


def dev_objectives(program: SentimentProgram, variant: Variant, lm: Any, dev: Sequence[Example],
                   config: ExperimentConfig, cache: ProbeCache) -> dict[str, float | None]:
    """Accuracy on dev and ERASER-bin faithfulness on a dev sample (cached probe); cost reported."""
    mode = metric_mode(config.measure.mode)
    ran = run_program(program, dev, lm, adapter=adapter_for(variant.adapter))
    answers = ran.answers
    scored = [a for a in answers if a.ok]
    out: dict[str, float | None] = {
        "accuracy": (sum(a.label_int == e.label for a, e in zip(answers, dev) if a.ok) / len(scored)) if scored else None,
        "parse_failure_rate": 1 - len(scored) / len(dev),
        "seconds_per_example": ran.seconds / len(dev),
    }
    if program.granularity is None:
        return {**out, "comprehensiveness_bins": None, "sufficiency_bins": None}
    probe = ProgramProbe(SentimentProgram("P"), lm, mode=config.measure.probe, cache=cache)
    source = "logprob" if config.measure.probe == "logprob" else "stated"
    sample = list(zip(dev, ran.attributions))[: config.measure.faithfulness_n]
    originals = probe.answers([e.text for e, _ in sample])
    calls = probe.stats.model_calls
    rows = []
    for i, ((example, attribution), original) in enumerate(zip(sample, originals)):
        if attribution is None:
            continue
        values, ranking = values_and_ranking(attribution, len(example.tokens))
        # the same seed per sentence as the held-out measurement, so a top-k ranking is padded alike
        rows.append(explanation_row(list(example.tokens), values, ranking, original, probe.answers, mode,
                                    p_source=source, seed=config.seed + i, bins_only=True))
    out["comprehensiveness_bins"] = mean_ci([r.get("comprehensiveness_bins") for r in rows]).mean
    out["sufficiency_bins"] = mean_ci([r.get("sufficiency_bins") for r in rows]).mean
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
    # a changed config (space, data, objectives) is a new study; more trials extend the same one
    same_study = config_digest(replace(config, search=replace(config.search, trials=0)))[:8]
    study = optuna.create_study(study_name=f"selfx-{config.name}-{same_study}", storage=storage, directions=directions,
                                sampler=optuna.samplers.NSGAIISampler(seed=config.seed), load_if_exists=True)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    with mlflow.start_run(run_name=f"{config.name} optimize") as parent:
        mlflow.log_params({"config": config.name, "objectives": ",".join(objectives), "trials": config.search.trials,
                           "optimizer_metric": config.search.optimizer_metric,
                           "faithfulness_weight": config.search.faithfulness_weight,
                           "optimizer_budget": config.search.optimizer_budget,
                           "space": json.dumps(config.search.space), "storage": storage, "sampler": "NSGA-II"})

        metric = OptimizerMetric(config.search.optimizer_metric, config.search.faithfulness_weight, lm, config, cache)

        def objective(trial: optuna.Trial) -> tuple[float, ...]:
            choice = {dim: trial.suggest_categorical(dim, list(options)) for dim, options in config.search.space.items()}
            variant = Variant(**choice)
            if progress:
                print(f"trial {trial.number}: {variant.name}", flush=True)
            program = build_program(variant, lm, dev, cache, config.seed)
            if variant.optimizer != "none":
                with dspy.context(lm=lm, adapter=adapter_for(variant.adapter)):
                    program = compile_with(variant.optimizer, program, train, metric, lm,
                                           config.search.optimizer_budget, config.seed)
                    calibrate(program, dev)  # the optimiser changed the demos the bias was read with
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
        held_out = _held_out(front, objectives, config, lm, dev, test, cache)
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


def _trial_program(variant: Variant, run_id: str) -> SentimentProgram:
    """A trial's program exactly as compiled (demos, optimiser output, calibration), from its MLflow run."""
    import mlflow

    program = SentimentProgram(variant.program, value_mode=variant.value_mode, decision=variant.decision)
    with tempfile.TemporaryDirectory() as folder:
        program.load(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="program.json", dst_path=folder))
    return program


def _held_out(front: Sequence[Any], objectives: Sequence[str], config: ExperimentConfig, lm: Any,
              dev: Sequence[Example], test: Sequence[Example], cache: ProbeCache) -> dict[str, Any]:
    """The paper variant against the optimised programs on the held-out test slice.

    The candidates are the Pareto points that are best on dev for each objective (at most one per
    objective, so the held-out cost stays bounded). Each is measured on the test slice with CIs and
    compared with the paper variant on the same sentences: McNemar and a paired bootstrap for
    accuracy, a paired bootstrap for comprehensiveness; ``beats_paper`` says where the paired 95 %
    CI lies above zero.
    """
    best: dict[int, Any] = {}
    for i, objective in enumerate(objectives):
        finite = [t for t in front if t.user_attrs.get("variant") and abs(t.values[i]) != float("inf")]
        if finite:
            pick = (min if objective in MINIMISE else max)(finite, key=lambda t: t.values[i])
            best[pick.number] = pick
    candidates = [("paper", PAPER, None, None)] + [
        (f"pareto#{number}", Variant(**t.user_attrs["variant"]), t.values, t.user_attrs.get("run_id"))
        for number, t in sorted(best.items())]
    measured: dict[str, Any] = {}
    per_example: dict[str, dict[str, list[float | None]]] = {}
    for label, variant, dev_values, run_id in candidates:
        program = (build_program(variant, lm, dev, cache, config.seed) if run_id is None else
                   _trial_program(variant, run_id))
        metrics, rows = evaluate_variant(program, variant, lm, test, config, cache)
        measured[label] = {"variant": variant.name,
                           **({"dev_objectives": dict(zip(objectives, dev_values))} if dev_values else {}),
                           **{k: v for k, v in metrics.items() if k.startswith(
                               ("accuracy", "comprehensiveness", "sufficiency_bins", "parse_failure",
                                "random_comprehensiveness", "seconds_per_example"))}}
        per_example[label] = {
            "accuracy": [None if r["prediction"] is None else float(r["prediction"] == r["gold"]) for r in rows],
            "comprehensiveness": [r["comprehensiveness_bins"] for r in rows],
        }
    paper = per_example["paper"]
    for label, values in per_example.items():
        if label == "paper":
            continue
        both = [(a, b) for a, b in zip(values["accuracy"], paper["accuracy"]) if a is not None and b is not None]
        vs_accuracy = {**mcnemar([a == 1 for a, _ in both], [b == 1 for _, b in both]),
                       **paired_bootstrap([a for a, _ in both], [b for _, b in both], seed=config.seed)}
        vs_comp = paired_bootstrap(values["comprehensiveness"], paper["comprehensiveness"], seed=config.seed)
        measured[label]["vs_paper_accuracy"] = vs_accuracy
        measured[label]["vs_paper_comprehensiveness"] = vs_comp
        measured[label]["beats_paper"] = {
            "accuracy": vs_accuracy["ci_low"] is not None and vs_accuracy["ci_low"] > 0,
            "comprehensiveness": vs_comp["ci_low"] is not None and vs_comp["ci_low"] > 0}
    return measured
