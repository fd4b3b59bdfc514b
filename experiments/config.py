"""Experiment configs: plain YAML, validated into frozen dataclasses with errors that name the key.

A config says which data (splits and sizes), which LM, which program variants to evaluate, how to
measure them (metric mode, probe mode, explainers, faithfulness sample), what to optimise and with
which budget, and where to track. See ``experiments/configs/quick.yaml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from programs.lm import supports_expected_values
from programs.self_explain import DECISIONS, PROGRAM_NAMES

CONFIG_DIR = Path(__file__).parent / "configs"
ADAPTERS = ("lean", "json", "chat")
DEMO_SOURCES = ("occlusion", "self")
VALUE_MODES = ("sample", "expected")
OBJECTIVES = ("accuracy", "comprehensiveness", "comprehensiveness_bins", "sufficiency_bins", "df_mit", "rankdel")
OPTIMIZERS = ("none", "bootstrap", "random-search", "mipro", "gepa")
OPTIMIZER_METRICS = ("accuracy", "comprehensiveness", "combined")


class ConfigError(ValueError):
    """A config value that is missing, of the wrong type or not allowed."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "sst2"
    train_split: str = "train"
    eval_split: str = "validation"
    train_n: int = 64
    dev_n: int = 30
    test_n: int = 100
    seed: int = 0


@dataclass(frozen=True)
class Variant:
    program: str = "P"
    demos: int = 0
    demo_source: str = "occlusion"
    decision: str = "generated"
    value_mode: str = "expected"
    adapter: str = "lean"
    optimizer: str = "none"

    @property
    def name(self) -> str:
        parts = [self.program, f"{self.demos}demos"]
        if self.demos and self.program != "P":
            parts.append(self.demo_source)
        parts += [self.decision, self.value_mode, self.adapter]
        if self.optimizer != "none":
            parts.append(self.optimizer)
        return "-".join(parts)


@dataclass(frozen=True)
class MeasureConfig:
    mode: str = "corrected"
    probe: str = "logprob"
    faithfulness_n: int = 20
    explainers: tuple[str, ...] = ("occlusion", "random")


@dataclass(frozen=True)
class SearchConfig:
    """The Optuna variant space and budget of ``selfx optimize``."""

    trials: int = 8
    objectives: tuple[str, ...] = ("accuracy", "comprehensiveness_bins")
    # what the DSPy optimisers maximise per example: the gold label, the ERASER-bin comprehensiveness
    # of the example's explanation (cached probe), or (1 - w) * correct + w * comprehensiveness
    optimizer_metric: str = "accuracy"
    faithfulness_weight: float = 0.5
    optimizer_budget: int = 12  # metric calls GEPA may spend, candidate trials MIPROv2 may run
    space: dict[str, tuple[Any, ...]] = field(default_factory=lambda: {
        "program": ("P", "PE", "EP"), "demos": (0, 3), "decision": ("generated", "batch"),
        "value_mode": ("expected",), "adapter": ("lean",), "optimizer": ("none", "bootstrap")})
    storage: str = "sqlite:///mlruns/optuna.db"


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    lm: str = "local"
    api_base: str | None = None
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    variants: tuple[Variant, ...] = (Variant(),)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    tracking_uri: str | None = None


_CHOICES: dict[str, tuple[Any, ...]] = {
    "program": PROGRAM_NAMES, "decision": DECISIONS, "value_mode": VALUE_MODES, "adapter": ADAPTERS,
    "demo_source": DEMO_SOURCES, "optimizer": OPTIMIZERS, "mode": ("compat", "corrected"),
    "probe": ("logprob", "predict-only", "same-program"), "objectives": OBJECTIVES,
    "explainers": ("occlusion", "lime", "random"), "optimizer_metric": OPTIMIZER_METRICS,
}


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        values[key] = _check(key, value, fields[key], f"{where}.{key}" if where else key)
    return cls(**values)


def _check(key: str, value: Any, spec: dataclasses.Field, where: str) -> Any:
    if key in ("data", "measure", "search"):
        return _build({"data": DataConfig, "measure": MeasureConfig, "search": SearchConfig}[key], value, where)
    if key == "variants":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: expected a non-empty list of variants")
        return tuple(_build(Variant, v, f"{where}[{i}]") for i, v in enumerate(value))
    if key == "space":
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of dimension -> list of choices")
        out = {}
        for dim, options in value.items():
            if dim not in {f.name for f in dataclasses.fields(Variant)}:
                raise ConfigError(f"{where}: unknown dimension {dim!r}; allowed: "
                                  f"{[f.name for f in dataclasses.fields(Variant)]}")
            if not isinstance(options, list) or not options:
                raise ConfigError(f"{where}.{dim}: expected a non-empty list")
            for option in options:
                _allowed(dim, option, f"{where}.{dim}")
            out[dim] = tuple(options)
        return out
    expected = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))
    if "int" in expected and "str" not in expected and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if expected.startswith("str") and not isinstance(value, str) and not (value is None and "None" in expected):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if expected == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{where}: expected a number between 0 and 1, got {value!r}")
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{where}: must be >= 0, got {value}")
    if key in ("objectives", "explainers"):
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: expected a non-empty list")
        for item in value:
            _allowed(key, item, where)
        return tuple(value)
    _allowed(key, value, where)
    return value


def _allowed(key: str, value: Any, where: str) -> None:
    choices = _CHOICES.get(key)
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {list(choices)}")


def load_config(path: str | Path | None = None) -> ExperimentConfig:
    """Read and validate a YAML config (default: the shipped quick.yaml)."""
    import yaml

    path = Path(path) if path else CONFIG_DIR / "quick.yaml"
    if not path.is_file():
        shipped = CONFIG_DIR / f"{path}.yaml"
        if shipped.is_file():
            path = shipped
        else:
            raise ConfigError(f"config file not found: {path}; shipped configs: "
                              f"{sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"{path}: a config is a mapping with at least a 'name'")
    config = _build(ExperimentConfig, raw, "")
    if config.search.trials < 1:
        raise ConfigError("search.trials: must be >= 1")
    if not supports_expected_values(config.lm, config.api_base):
        config = _sampled_values(config, raw)
    return config


def _sampled_values(config: ExperimentConfig, raw: dict) -> ExperimentConfig:
    """An API model samples its importances (expected values need the embedded decoder): where the config left
    value_mode to its default it becomes ``sample``; where it asked for ``expected`` that is an error."""
    variants = []
    given_variants = raw.get("variants") or []
    for i, variant in enumerate(config.variants):
        if "value_mode" in (given_variants[i] if i < len(given_variants) else {}) and variant.value_mode == "expected":
            raise ConfigError(f"variants[{i}].value_mode: 'expected' needs an embedded model; {config.lm} returns "
                              "sampled importances only: set value_mode: sample")
        variants.append(dataclasses.replace(variant, value_mode="sample"))
    space = dict(config.search.space)
    if "expected" in ((raw.get("search") or {}).get("space") or {}).get("value_mode", ()):
        raise ConfigError(f"search.space.value_mode: 'expected' needs an embedded model; {config.lm} returns "
                          "sampled importances only: use [sample]")
    space["value_mode"] = ("sample",)
    return dataclasses.replace(config, variants=tuple(variants),
                               search=dataclasses.replace(config.search, space=space))

