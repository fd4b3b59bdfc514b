"""How the pinned figures are produced: through the CLI (the stable interface), flattened to one number per
key. Shared by the golden tests and by ``regenerate.py``.

Replay needs no model, so its figures are compared exactly. Study and run figures come from the real
SmolLM2 model, whose numbers depend on llama.cpp's CPU kernels: each file also pins a *numerics
fingerprint* (the label log-odds of a fixed prompt). Where the fingerprint matches, the kernels are the
ones the figures were made with and every figure must match to 1e-6; on a CPU whose kernels round
differently the figures are compared within ``LOOSE`` instead, and the test says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).parent
TIGHT = 1e-6
LOOSE = 0.05
# Figures that measure time or depend on how requests were scheduled, not science; never pinned.
UNPINNED = ("seconds", "wall", "run_id", "duration", "cache_hits")  # timing and cache bookkeeping

TWO_REVIEWS = ({"text": "a warm , funny film", "label": 1}, {"text": "dull and far too long", "label": 0})

TINY_RUN = """
name: golden
lm: local:smollm2-135m
data: {source: sst2, train_n: 0, dev_n: 3, test_n: 3}
variants:
  - {program: P, decision: batch}
  - {program: PE, value_mode: expected}
measure: {mode: corrected, probe: logprob, faithfulness_n: 2, explainers: [occlusion, random, lexicon]}
"""


def flatten(value: Any, prefix: str = "") -> dict[str, float | None]:
    """Every number in a nested report, keyed by its path; timings are left out."""
    out: dict[str, float | None] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}/{key}" if prefix else str(key)))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
    elif isinstance(value, bool):
        out[prefix] = float(value)
    elif isinstance(value, (int, float)) or value is None:
        if not any(word in prefix for word in UNPINNED):
            out[prefix] = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    return out


def numerics_fingerprint() -> float:
    """SmolLM2's label log-odds on a fixed prompt, evaluated in one batch: changes with the CPU kernels."""
    from programs.lean_adapter import LeanAdapter
    from programs.lm import make_lm
    from programs.signatures import Sentiment

    engine = make_lm("local:smollm2-135m", cache=False).engine
    messages = LeanAdapter().format(Sentiment, [], {"review": "a gorgeous , witty , seductive movie ."})
    engine._loaded().llm.reset()
    scores = engine.slot_logprobs(messages, '{"label": "', ["negative", "positive"])
    return scores["positive"] - scores["negative"]


def _cli_json(args: list[str], out: Path) -> dict[str, Any]:
    from experiments.cli import main

    code = main([*args, "--json", str(out)])
    if code != 0:
        raise RuntimeError(f"selfx {' '.join(args)} exited with {code}")
    return json.loads(out.read_text(encoding="utf-8"))


def replay_figures(model: str, mode: str) -> dict[str, Any]:
    import tempfile

    folder = Path(tempfile.mkdtemp())
    report = _cli_json(["replay", "--model", model, "--mode", mode, "--out", str(folder), "--no-mlflow"],
                       folder / "report.json")
    return {"figures": flatten({"faithfulness": report["faithfulness"], "agreement": report["agreement"]})}


def study_figures(folder: Path) -> dict[str, Any]:
    data = folder / "two.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in TWO_REVIEWS) + "\n", encoding="utf-8")
    report = _cli_json(["study", "--lm", "local:smollm2-135m", "--data", str(data), "--n", "2", "--lime-samples", "2",
                        "--cache", str(folder / "probe.sqlite"), "--out", str(folder / "out"), "--no-mlflow"],
                       folder / "study.json")
    return {"fingerprint": numerics_fingerprint(),
            "figures": flatten({"faithfulness": report["faithfulness"], "agreement": report["agreement"]})}


def run_figures(folder: Path) -> dict[str, Any]:
    import os

    (folder / "golden.yaml").write_text(TINY_RUN, encoding="utf-8")
    (folder / "mlruns").mkdir(exist_ok=True)
    previous = Path.cwd()
    os.chdir(folder)  # the probe cache and MLflow store live in the working directory
    try:
        result = _cli_json(["run", str(folder / "golden.yaml"), "--tracking-uri",
                            f"sqlite:///{folder}/mlruns/mlflow.db"], folder / "run.json")
    finally:
        os.chdir(previous)
    metrics = {item["variant"]: item["metrics"] for item in result["variants"]}
    return {"fingerprint": numerics_fingerprint(), "figures": flatten(metrics)}


def tolerance(pinned: dict[str, Any]) -> float:
    """TIGHT where this CPU's kernels are the ones the figures were pinned with, else LOOSE (with a warning)."""
    import warnings

    if abs(numerics_fingerprint() - pinned["fingerprint"]) <= TIGHT:
        return TIGHT
    warnings.warn(f"llama.cpp's kernels on this CPU round differently from those the figures were pinned with; "
                  f"comparing within {LOOSE}", stacklevel=2)
    return LOOSE


def compare(expected: dict[str, Any], actual: dict[str, Any], *, tolerance: float) -> list[str]:
    """Every key whose value moved by more than ``tolerance`` (or appeared, or vanished)."""
    want, got = expected["figures"], actual["figures"]
    problems = [f"missing: {key}" for key in sorted(set(want) - set(got))]
    problems += [f"new: {key} = {got[key]}" for key in sorted(set(got) - set(want))]
    for key in sorted(set(want) & set(got)):
        a, b = want[key], got[key]
        if (a is None) != (b is None) or (a is not None and abs(a - b) > tolerance):
            problems.append(f"{key}: pinned {a}, now {b}")
    return problems


def load(name: str) -> dict[str, Any]:
    return json.loads((FOLDER / f"{name}.json").read_text(encoding="utf-8"))
