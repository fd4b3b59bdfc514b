"""Program variants: build one from its config (demos, calibration), evaluate it, describe it, and load it back
from its MLflow run. Shared by ``selfx run``, ``selfx optimize`` and ``selfx export``."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import dspy

from experiments import progress
from experiments.config import ExperimentConfig, Variant
from experiments.measure import Explanation, program_faithfulness
from experiments.predict import predict
from experiments.tracking import Dataset, download_program
from metrics.calibration import brier_score, expected_calibration_error
from metrics.modes import metric_mode
from metrics.stats import mean_ci
from programs.data import load_examples
from programs.demos import build_demos
from programs.lean_adapter import LeanAdapter
from programs.lm import describe_lm, is_embedded
from programs.probe import Probe, ProgramProbe
from programs.probe_cache import ProbeCache
from programs.self_explain import SentimentProgram
from programs.types import Example, InputError

PER_SENTENCE = ("comprehensiveness_bins", "sufficiency_bins", "comprehensiveness")  # columns of the example table


def adapter_for(name: str) -> dspy.Adapter:
    return {"lean": LeanAdapter, "json": dspy.JSONAdapter, "chat": dspy.ChatAdapter}[name]()


def splits(config: ExperimentConfig) -> tuple[list[Example], list[Example], list[Example]]:
    """(train pool, dev, test): dev and test are consecutive, disjoint slices of the eval split."""
    data = config.data
    train = load_examples(data.source, split=data.train_split, n=data.train_n) if data.train_n else []
    held = load_examples(data.source, split=data.eval_split, n=data.dev_n + data.test_n)
    return train, held[: data.dev_n], held[data.dev_n: data.dev_n + data.test_n]


def build_program(variant: Variant, lm: Any, dev: Sequence[Example], cache: ProbeCache, seed: int) -> SentimentProgram:
    """The variant's program with its demos and, for calibrated decisions, its calibration."""
    program = _bare_program(variant)
    with dspy.context(lm=lm, adapter=adapter_for(variant.adapter)):
        if variant.demos:
            program.predict.demos = build_demos(variant.program, variant.demos, lm=lm, source=variant.demo_source,
                                                seed=seed + variant.demo_seed, cache=cache, format=variant.format)
        calibrate(program, dev, cache)
    return program


def calibrate(program: SentimentProgram, dev: Sequence[Example], cache: ProbeCache) -> None:
    """Calibrate a program whose decision rule needs it (on the dev slice for ``batch``; E-P's decoded answers
    kept in ``cache``); call it again whenever the program's demos change (an optimiser), since the bias
    depends on them."""
    if program.decision not in ("contextual", "batch"):
        return
    if program.decision == "batch" and not dev:
        raise InputError("decision 'batch' needs a calibration batch: set data.dev_n > 0")
    program.calibrate([e.text for e in dev], batch_name=f"dev[:{len(dev)}]", cache=cache)


def rendered_prompt(program: SentimentProgram, adapter: str, lm: Any) -> str:
    """The prompt exactly as the model sees it (chat template or plain text), with demos."""
    inputs = {"review": "{review}"}
    if program.granularity == "topk":
        inputs["k"] = "{k}"
    messages = adapter_for(adapter).format(program.predict.signature, program.predict.demos, inputs)
    if is_embedded(lm):
        return lm.engine.render(messages)
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def measurement_probe(program: SentimentProgram, adapter: str, config: ExperimentConfig, lm: Any,
                      cache: ProbeCache | None) -> Probe:
    """The probe a config measures a program's faithfulness through: that program's own decision (its prompt
    through the variant's adapter), unless the config asks for another probe mode."""
    return ProgramProbe(program, lm, mode=config.measure.probe, cache=cache, adapter=adapter_for(adapter),
                        concurrency=config.concurrency, progress=progress.bar)


@dataclass
class Evaluation:
    """One variant on the test slice: metrics, per-example rows, and the per-sentence explanations (self and the
    explainers', the faithfulness sample) for the report's heat-maps."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    explanations: list[dict[str, Any]]


def evaluate_variant(program: SentimentProgram, variant: Variant, lm: Any, test: Sequence[Example],
                     config: ExperimentConfig, cache: ProbeCache) -> Evaluation:
    """Metrics of one variant, its per-example rows and its explanations."""
    ran = predict(program, test, lm, adapter=adapter_for(variant.adapter), threads=config.concurrency,
                  progress=progress.enabled())
    answers, attributions = ran.answers, ran.attributions
    gold = [e.label for e in test]
    ok = [(a, y) for a, y in zip(answers, gold, strict=True) if a.ok]
    metrics: dict[str, Any] = {
        **mean_ci([None if not a.ok else float(a.label_int == y) for a, y in zip(answers, gold, strict=True)],
                  seed=config.seed).as_dict("accuracy"),
        "parse_failure_rate": sum(not a.ok for a in answers) / len(answers),
        "ece_stated": expected_calibration_error([a.confidence for a, _ in ok], [a.label_int == y for a, y in ok])
        if ok else None,
        "brier_stated": brier_score([a.p_positive["stated"] for a, _ in ok], [y for _, y in ok]) if ok else None,
        "wall_seconds": ran.seconds, "seconds_per_example": ran.seconds / len(test),
        "seconds_per_example_median": median(ran.durations),
        "lm_calls": ran.lm_calls, "tokens": ran.tokens,
    }
    with_logprob = [(a, y) for a, y in ok if "logprob" in a.p_positive]
    if with_logprob:
        metrics["brier_logprob"] = brier_score([a.p_positive["logprob"] for a, _ in with_logprob],
                                               [y for _, y in with_logprob])
    per_sentence: list[dict[str, Any]] = []
    explanations: list[dict[str, Any]] = []
    if program.granularity is not None:
        n = config.measure.faithfulness_n
        faithfulness, per_sentence, kinds = program_faithfulness(
            test[:n], attributions[:n], measurement_probe(program, variant.adapter, config, lm, cache),
            mode=metric_mode(config.measure.mode),
            explainers=config.measure.explainers, seed=config.seed,
            lime_samples_per_token=config.measure.lime_samples_per_token, protocol=config.measure.protocol)
        metrics.update(faithfulness)
        explanations = [{"review": e.text, "tokens": list(e.tokens), "label": a.label,
                         "p_positive": a.p_positive.get("logprob", a.p_positive.get("stated")),
                         "status": "ok" if a.ok else f"failed: {a.failure}",
                         **{kind: _explanation_values(items[i]) for kind, items in kinds.items()}}
                        for i, (e, a) in enumerate(zip(test[:n], answers[:n], strict=True))]
    rows = [{"review": e.text, "gold": "positive" if e.label else "negative", "prediction": a.label,
             "confidence": a.confidence, "p_positive": json.dumps(a.p_positive),
             "importances": json.dumps(list(att.values) if att is not None and att.ranking is None else
                                       (list(att.ranking) if att is not None else None)),
             "parse_status": "ok" if a.ok else f"failed: {a.failure}",
             "seconds": round(seconds, 3),
             **{key: (per_sentence[i]["self"].get(key) if i < len(per_sentence) else None) for key in PER_SENTENCE}}
            for i, (e, a, att, seconds) in enumerate(zip(test, answers, attributions, ran.durations, strict=True))]
    return Evaluation(metrics, rows, explanations)


def _explanation_values(explanation: Explanation | None) -> dict[str, Any] | None:
    if explanation is None:
        return None
    return {"values": list(explanation.values), "ranking": list(explanation.ranking or []) or None}


def variant_params(variant: Variant, program: SentimentProgram, lm: Any, config: ExperimentConfig) -> dict[str, Any]:
    lm_info = describe_lm(lm)
    return {
        **variant.model_dump(), "order": program.order, "granularity": program.granularity or "none",
        "k_fraction": program.k_fraction if program.granularity == "topk" else "none",
        "lm": lm_info["model"], "lm_spec": config.lm, "backend": lm_info["backend"],
        "temperature": lm.kwargs.get("temperature"), "max_tokens": lm.kwargs.get("max_tokens"),
        "probe_mode": config.measure.probe, "metric_mode": config.measure.mode, "seed": config.seed,
        "data_seed": config.data.seed, "data": config.data.source, "test_n": config.data.test_n,
        "calibration": json.dumps(program.calibration) if program.calibration else "none",
    }


# Variant fields added after configs were first digested, with their defaults: left out of the digest when unset,
# so configs that do not use them keep their digests (resumed runs, optimisation study names).
_LATER_VARIANT_FIELDS = {"explanation_samples": 0, "demo_seed": 0}


def config_digest(config: ExperimentConfig) -> str:
    """Identifies a config's content (not its file name): an interrupted run resumes only the same config."""
    content = config.model_dump(mode="json")
    for variant in content["variants"]:
        for key, default in _LATER_VARIANT_FIELDS.items():
            if variant.get(key) == default:
                del variant[key]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def load_program(variant: Variant, run_id: str) -> SentimentProgram:
    """A variant's program exactly as its run saved it (demos, optimiser output, calibration)."""
    program = _bare_program(variant)
    with tempfile.TemporaryDirectory() as folder:
        program.load(str(download_program(run_id, Path(folder))))
    return program


def _bare_program(variant: Variant) -> SentimentProgram:
    """The variant's program before demos, compilation or calibration."""
    return SentimentProgram(variant.program, value_mode=variant.value_mode, decision=variant.decision,
                            format=variant.format, explanation_samples=variant.label_samples)


def variant_of(params: dict[str, str]) -> Variant:
    """The variant a run's params describe (a run logged before a field existed takes its default). MLflow keeps
    params as strings: the model's own types convert them (lax validation), so no field list is kept here."""
    return Variant.model_validate({k: params[k] for k in Variant.model_fields if k in params}, strict=False)


def describe_variant(variant: Variant, program: SentimentProgram, lm: Any) -> str:
    """A short description of a variant for the MLflow UI: program, explanation, demos, decision rule."""
    explains = {None: "predicts only", "full": f"explains every word ({variant.format}, {variant.value_mode} values)",
                "topk": "names its top-k words"}[program.granularity]
    demos = (f"{variant.demos} demos ({'gold labels' if variant.program == 'P' else variant.demo_source}"
             f"{f', draw {variant.demo_seed}' if variant.demo_seed else ''})" if variant.demos else "zero-shot")
    rule = variant.decision + (f" (bias {program.calibration['bias']:+.2f} from {program.calibration['batch']})"
                               if program.calibration else "")
    if variant.label_samples:
        rule += f" on its label read over {variant.label_samples} sampled explanations"
    optimiser = f"; compiled with {variant.optimizer}" if variant.optimizer != "none" else ""
    return (f"{program.order} program that {explains}; {demos}; decision {rule}; {variant.adapter} adapter; "
            f"{describe_lm(lm)['model']}{optimiser}.")


def prompt_template(program: SentimentProgram, adapter: str) -> list[dict[str, str]]:
    """The program's prompt as chat messages with ``{{review}}`` (and ``{{k}}``) to fill in: what the prompt
    registry holds and export writes."""
    messages = adapter_for(adapter).format(program.predict.signature, program.predict.demos,
                                           {"review": "{review}", "k": "{k}"})
    return [{"role": m["role"], "content": m["content"].replace("{review}", "{{review}}").replace("{k}", "{{k}}")}
            for m in messages]


def datasets(config: ExperimentConfig, **slices: Sequence[Example]) -> dict[str, Dataset]:
    """The named slices (dev, test, ...) as MLflow datasets: source, split and the examples' positions."""
    data = config.data
    start = {"dev": 0, "test": data.dev_n}
    return {name: Dataset(name=f"{data.source}", split=f"{data.eval_split}[{start.get(name, 0)}:"
                                                        f"{start.get(name, 0) + len(examples)}]",
                          records=[{"review": e.text, "label": e.label} for e in examples], source=data.source)
            for name, examples in slices.items() if examples}
