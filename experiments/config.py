"""Experiment configs: YAML validated by pydantic models, with errors that name the key and the allowed values.

A config says which data (splits and sizes), which LM, which program variants to evaluate, how to
measure them (metric mode, probe, explainers, faithfulness sample), what to optimise and with which
budget, and where to track. Defaults live here, in the models, and nowhere else: the CLI reads its
defaults from them. See ``experiments/configs/quick.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import pydantic
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from metrics.modes import MODES
from programs.demos import EXPLANATION_SOURCES
from programs.explainers import EXPLAINERS
from programs.lm import supports_expected_values
from programs.probe import PROBE_MODES
from programs.self_explain import DECISIONS, PROGRAM_NAMES, explains_first
from programs.signatures import FORMATS
from programs.types import InputError

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONCURRENCY = 4  # a local llama.cpp server with a few --parallel slots; raise it for hosted APIs

# Choices come from the registries: a new program, decision rule, probe, explainer or metric appears here by itself.
Program = Literal[PROGRAM_NAMES]  # type: ignore[valid-type]
Decision = Literal[DECISIONS]  # type: ignore[valid-type]
ValueMode = Literal["sample", "expected"]
Format = Literal[FORMATS]  # type: ignore[valid-type]
Adapter = Literal["lean", "json", "chat"]
DemoSource = Literal[EXPLANATION_SOURCES]  # type: ignore[valid-type]
Optimizer = Literal["none", "bootstrap", "random-search", "mipro", "gepa"]
OptimizerMetric = Literal["accuracy", "comprehensiveness", "combined"]
# what a trial measures on the dev slice (ERASER bins: about 10 probe texts per sentence, affordable per trial)
Objective = Literal["accuracy", "comprehensiveness_bins", "sufficiency_bins"]
Mode = Literal[tuple(MODES)]  # type: ignore[valid-type]
ProbeMode = Literal[PROBE_MODES]  # type: ignore[valid-type]
ExplainerName = Literal[tuple(EXPLAINERS)]  # type: ignore[valid-type]
Protocol = Literal["all", "bins"]


class ConfigError(InputError):
    """A config value that is missing, of the wrong type or not allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(_Strict):
    source: str = "sst2"
    train_split: str = "train"
    eval_split: str = "validation"
    train_n: NonNegativeInt = 64  # pool for the DSPy optimisers (train split)
    dev_n: NonNegativeInt = 30  # calibration batch and optimisation objectives (first dev_n of the eval split)
    test_n: NonNegativeInt = 100  # held-out evaluation (the next test_n of the eval split)
    seed: NonNegativeInt = 0


class Variant(_Strict):
    """One program variant: what ``selfx run`` evaluates and one point of ``selfx optimize``'s space."""

    program: Program = "P"
    format: Format = "numeric"  # how a full explanation speaks: numbers in [-1, 1] or polarity words
    demos: NonNegativeInt = 0
    demo_source: DemoSource = "occlusion"
    # which draw of training reviews becomes the demos, counted from the config's seed (0: the seed's own draw);
    # a search dimension chooses among draws by the objectives on the dev slice
    demo_seed: NonNegativeInt = 0
    decision: Decision = "generated"
    value_mode: ValueMode = "expected"
    adapter: Adapter = "lean"
    optimizer: Optimizer = "none"
    # E-P on embedded models: its label read over this many explanations sampled at temperature 1 (0: the
    # greedy explanation's label only); other programs do not use it
    explanation_samples: NonNegativeInt = 0

    @property
    def label_samples(self) -> int:
        """The explanation samples this variant's program reads its label over (what it uses of
        ``explanation_samples``)."""
        return self.explanation_samples if explains_first(self.program) else 0

    @property
    def name(self) -> str:
        parts = [self.program] + (["polarity"] if self.format == "polarity" and self.program in ("PE", "EP") else [])
        parts.append(f"{self.demos}demos")
        if self.demos and self.program != "P":
            parts.append(self.demo_source)
        if self.demos and self.demo_seed:
            parts.append(f"draw{self.demo_seed}")
        parts += [self.decision, self.value_mode, self.adapter]
        if self.label_samples:
            parts.append(f"{self.label_samples}samples")
        if self.optimizer != "none":
            parts.append(self.optimizer)
        return "-".join(parts)


# The study's paper prompt as selfx runs it: P-E, zero-shot, the generated label, sampled values.
PAPER = Variant(program="PE", demos=0, decision="generated", value_mode="sample", adapter="lean")


class MeasureConfig(_Strict):
    mode: Mode = "corrected"
    probe: ProbeMode = "logprob"
    faithfulness_n: NonNegativeInt = 20
    # all: the study's five metrics (about 3n probe texts per sentence and explainer); bins: ERASER-bin
    # comprehensiveness and sufficiency only (about 10), what large held-out slices can afford
    protocol: Protocol = "all"
    explainers: tuple[ExplainerName, ...] = Field(default=("occlusion", "random"), min_length=1)
    lime_samples_per_token: PositiveInt = 10


def _default_space() -> dict[str, tuple[Any, ...]]:
    return {"program": ("P", "PE", "EP"), "demos": (0, 3), "decision": ("generated", "batch"),
            "value_mode": ("expected",), "adapter": ("lean",), "optimizer": ("none", "bootstrap")}


class SearchConfig(_Strict):
    """The Optuna variant space and budget of ``selfx optimize``."""

    trials: PositiveInt = 8
    objectives: tuple[Objective, ...] = Field(default=("accuracy", "comprehensiveness_bins"), min_length=1)
    # what the DSPy optimisers maximise per example: the gold label, the ERASER-bin comprehensiveness of the
    # example's explanation (cached probe), or (1 - w) * correct + w * comprehensiveness
    optimizer_metric: OptimizerMetric = "accuracy"
    faithfulness_weight: float = Field(default=0.5, ge=0, le=1)
    optimizer_budget: PositiveInt = 12  # metric calls GEPA may spend, candidate trials MIPROv2 may run
    space: dict[str, tuple[Any, ...]] = Field(default_factory=_default_space)
    storage: str = "sqlite:///mlruns/optuna.db"
    # a running trial writes a heartbeat this often; one silent for twice as long (its process was killed)
    # is marked failed by Optuna when the study next runs
    heartbeat_seconds: PositiveInt = 30

    @pydantic.field_validator("space", mode="before")
    @classmethod
    def _check_space(cls, space: Any) -> dict[str, tuple[Any, ...]]:
        if not isinstance(space, dict):
            raise ValueError("expected a mapping of dimension -> list of choices")
        out = {}
        for dim, options in space.items():
            if dim not in Variant.model_fields:
                raise ValueError(f"unknown dimension {dim!r}; allowed: {list(Variant.model_fields)}")
            if not isinstance(options, (list, tuple)) or not options:
                raise ValueError(f"{dim}: expected a non-empty list")
            for option in options:
                try:
                    Variant.model_validate({dim: option})
                except pydantic.ValidationError as exc:
                    raise ValueError(f"{dim}: {_message(exc.errors()[0])}") from None
            out[dim] = tuple(options)
        return out


class ExperimentConfig(_Strict):
    name: str
    lm: str = "local"
    api_base: str | None = None
    # requests in flight to an API backend (an embedded model answers one at a time whatever this says)
    concurrency: PositiveInt = DEFAULT_CONCURRENCY
    seed: NonNegativeInt = 0
    data: DataConfig = DataConfig()
    variants: tuple[Variant, ...] = Field(default=(Variant(),), min_length=1)
    measure: MeasureConfig = MeasureConfig()
    search: SearchConfig = SearchConfig()
    tracking_uri: str | None = None


def _message(error: dict[str, Any]) -> str:
    """One pydantic error in the words of the old hand-written checks (they named the allowed values)."""
    kind, value = error["type"], error.get("input")
    if kind == "literal_error":
        allowed = error.get("ctx", {}).get("expected", "")
        return f"{value!r} is not allowed; choose one of [{allowed.replace(' or ', ', ')}]"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {value!r}"
    if kind == "greater_than_equal":
        return f"must be >= {error['ctx']['ge']}, got {value!r}"
    if kind == "greater_than":
        return f"must be >= {error['ctx']['gt'] + 1}, got {value!r}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("string_type", "float_type", "tuple_type", "dict_type", "model_type"):
        return f"expected {kind.removesuffix('_type').replace('model', 'a mapping')}, got {value!r}"
    return error["msg"].removeprefix("Value error, ")


def _where(location: tuple[Any, ...]) -> str:
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_config(raw: Any, source: str = "config") -> ExperimentConfig:
    """Validate a parsed YAML mapping; one ConfigError naming every bad key and what is allowed."""
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"{source}: a config is a mapping with at least a 'name'")
    try:
        config = ExperimentConfig.model_validate(_lists_as_tuples(raw))
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        unknown = [_where(e["loc"]) for e in errors if e["type"] == "extra_forbidden"]
        lines = [f"unknown key(s) {sorted(unknown)}"] if unknown else []
        lines += [f"{_where(e['loc'])}: {_message(e)}" for e in errors if e["type"] != "extra_forbidden"]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None
    if not supports_expected_values(config.lm, config.api_base):
        _refuse_explanation_samples(config)
        config = _sampled_values(config, raw)
    return config


def _lists_as_tuples(value: Any) -> Any:
    """YAML lists become tuples (the models are frozen and strict)."""
    if isinstance(value, dict):
        return {k: _lists_as_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_as_tuples(v) for v in value)
    return value


def load_config(path: str | Path | None = None) -> ExperimentConfig:
    """Read and validate a YAML config (default: the shipped quick.yaml); a bare name finds a shipped one."""
    import yaml

    path = Path(path) if path else CONFIG_DIR / "quick.yaml"
    if not path.is_file():
        shipped = CONFIG_DIR / f"{path}.yaml"
        if not shipped.is_file():
            raise ConfigError(f"config file not found: {path}; shipped configs: "
                              f"{sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))}")
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, str(path))


def _refuse_explanation_samples(config: ExperimentConfig) -> None:
    """An API model cannot read its label over sampled explanations (the embedded decoder reads the label slot
    after each): say so before anything runs rather than failing every such variant."""
    bad = [f"variants[{i}].explanation_samples" for i, v in enumerate(config.variants) if v.label_samples]
    bad += ["search.space.explanation_samples"] if any(config.search.space.get("explanation_samples", ())) else []
    if bad:
        raise ConfigError(f"{', '.join(bad)}: reading E-P's label over sampled explanations needs an embedded "
                          f"model; {config.lm} is not one: set explanation_samples to 0 (or leave it out)")


def _sampled_values(config: ExperimentConfig, raw: dict) -> ExperimentConfig:
    """An API model samples its importances (expected values need the embedded decoder): where the config left
    value_mode to its default it becomes ``sample``; where it asked for ``expected`` that is an error."""
    given_variants = raw.get("variants") or []
    for i, variant in enumerate(config.variants):
        if "value_mode" in (given_variants[i] if i < len(given_variants) else {}) and variant.value_mode == "expected":
            raise ConfigError(f"variants[{i}].value_mode: 'expected' needs an embedded model; {config.lm} returns "
                              "sampled importances only: set value_mode: sample")
    if "expected" in ((raw.get("search") or {}).get("space") or {}).get("value_mode", ()):
        raise ConfigError(f"search.space.value_mode: 'expected' needs an embedded model; {config.lm} returns "
                          "sampled importances only: use [sample]")
    variants = tuple(v.model_copy(update={"value_mode": "sample"}) for v in config.variants)
    space = {**config.search.space, "value_mode": ("sample",)}
    return config.model_copy(update={"variants": variants,
                                     "search": config.search.model_copy(update={"space": space})})


def choices(annotation: Any) -> tuple[Any, ...]:
    """The allowed values of a Literal type, for CLI choices."""
    return get_args(annotation)
