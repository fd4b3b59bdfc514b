"""The one LM factory: a spec string -> a configured ``dspy.LM``.

Specs:
- ``local`` (the default embedded model), ``local:smollm2-135m``, ``local:gemma3-270m``,
  ``local:/path/model.gguf`` — in-process llama.cpp (:class:`LlamaCppEngine`);
- ``openai/<model>`` — OpenAI through DSPy's native route; the key only from ``OPENAI_API_KEY``;
- any spec with ``api_base`` — an OpenAI-compatible server (:class:`OpenAICompatEngine`), the
  model name being the spec without an ``openai/`` prefix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from programs.embedded_models import DEFAULT_EMBEDDED, EMBEDDED_MODELS
from programs.types import InputError

SPEC_FORMS = ("local", "local:<name>", "local:/path/model.gguf", "openai/<model>", "<model> with --api-base URL")


class LMSpecError(InputError):
    """An LM spec that names no backend we know."""


@dataclass(frozen=True)
class LMSpec:
    backend: str  # "local", "openai" or "openai-compatible"
    model: str
    api_base: str | None = None


def parse_lm_spec(spec: str, api_base: str | None = None) -> LMSpec:
    """Parse an LM spec string.

    >>> parse_lm_spec("local:gemma3-270m")
    LMSpec(backend='local', model='gemma3-270m', api_base=None)
    >>> parse_lm_spec("openai/smol", api_base="http://127.0.0.1:8000/v1").backend
    'openai-compatible'
    """
    spec = (spec or "").strip()
    if api_base:
        if not spec:
            raise LMSpecError("--api-base needs a model name too, e.g. --lm openai/my-model")
        return LMSpec("openai-compatible", spec.removeprefix("openai/"), api_base)
    if spec == "local":
        return LMSpec("local", DEFAULT_EMBEDDED)
    if spec.startswith("local:"):
        target = spec.removeprefix("local:")
        if target in EMBEDDED_MODELS or target.endswith(".gguf") or os.sep in target:
            return LMSpec("local", target)
        raise LMSpecError(f"unknown embedded model {target!r} in LM spec {spec!r}; choose one of "
                          f"{sorted(EMBEDDED_MODELS)} or give local:/path/model.gguf")
    if spec.startswith("openai/") and len(spec) > len("openai/"):
        return LMSpec("openai", spec)
    raise LMSpecError(f"unknown LM spec {spec!r}; use one of: {', '.join(SPEC_FORMS)}")


def make_lm(spec: str = "local", *, api_base: str | None = None, temperature: float = 0.0,
            max_tokens: int = 256, cache: bool = True) -> Any:
    """Build the ``dspy.LM`` for a spec. No API key ever passes through here."""
    import dspy

    parsed = parse_lm_spec(spec, api_base)
    if parsed.backend == "local":
        from programs.llama_engine import LlamaCppEngine

        engine = LlamaCppEngine(parsed.model)
        return dspy.LM(f"local/{engine.model_name}", engine=engine, temperature=temperature,
                       max_tokens=max_tokens, cache=cache)
    if parsed.backend == "openai-compatible":
        from programs.openai_engine import OpenAICompatEngine

        engine = OpenAICompatEngine(parsed.model, api_base=parsed.api_base or "", timeout=api_timeout())
        return dspy.LM(f"openai-compatible/{parsed.model}", engine=engine, temperature=temperature,
                       max_tokens=max_tokens, cache=cache)
    if not os.environ.get("OPENAI_API_KEY"):
        raise LMSpecError(f"{spec} needs the OPENAI_API_KEY environment variable (keys are read only from "
                          "the environment), or pass --api-base for an OpenAI-compatible server")
    return dspy.LM(parsed.model, temperature=temperature, max_tokens=max_tokens, cache=cache)


def api_timeout() -> float:
    """Seconds an API request may take before the client retries it: ``$SELFX_API_TIMEOUT``, default 120."""
    raw = os.environ.get("SELFX_API_TIMEOUT", "120")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise InputError(f"SELFX_API_TIMEOUT must be a positive number of seconds, got {raw!r}")
    return seconds


def supports_expected_values(spec: str, api_base: str | None = None) -> bool:
    """Whether importances can be read as expected values: only the embedded decoder sees each value slot's
    distribution (reading them from an API's top_logprobs is not implemented), so API models sample."""
    return parse_lm_spec(spec, api_base).backend == "local"


def check_value_mode(spec: str, api_base: str | None, value_mode: str) -> None:
    """Refuse expected-value importances on an API model rather than silently sampling them."""
    if value_mode == "expected" and not supports_expected_values(spec, api_base):
        raise InputError(f"value mode 'expected' needs an embedded model; {spec} returns sampled importances only: "
                         "use --value-mode sample")


def reflection_lm(lm: Any, *, n_ctx: int = 8192) -> Any:
    """The LM an instruction optimiser (GEPA) reflects with: the same model, but an embedded one gets a wider
    context (the reflection prompt holds the instruction, examples, outputs and feedback: over 4k tokens;
    SmolLM2 and Gemma-3 were trained on >= 8k) and samples, as GEPA proposes by sampling."""
    import dspy

    if not is_embedded(lm):
        return lm
    from programs.llama_engine import LlamaCppEngine

    engine = LlamaCppEngine(lm.engine.model, n_ctx=n_ctx, seed=lm.engine.seed)
    return dspy.LM(lm.model, engine=engine, temperature=1.0, max_tokens=1024, cache=lm.cache)


def describe_lm(lm: Any) -> dict[str, str]:
    """Backend and model of an LM, for logs and JSON reports (never a key)."""
    engine = getattr(lm, "engine", None)
    from programs.llama_engine import LlamaCppEngine
    from programs.openai_engine import OpenAICompatEngine

    if isinstance(engine, LlamaCppEngine):
        return {"backend": "local", "model": engine.model_name}
    if isinstance(engine, OpenAICompatEngine):
        return {"backend": "openai-compatible", "model": engine.model, "api_base": engine.api_base}
    if not isinstance(engine, str):
        return {"backend": f"engine:{type(engine).__name__}", "model": lm.model}
    return {"backend": lm.model.split("/", 1)[0], "model": lm.model}


def history_tokens(entries: Any) -> int:
    """Tokens used by a slice of ``lm.history`` (total, or prompt + completion when no total was given)."""
    total = 0
    for entry in entries:
        usage = entry.get("usage") or {}
        total += int(usage.get("total_tokens") or (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)))
    return total


def is_embedded(lm: Any) -> bool:
    from programs.llama_engine import LlamaCppEngine

    return isinstance(getattr(lm, "engine", None), LlamaCppEngine)
