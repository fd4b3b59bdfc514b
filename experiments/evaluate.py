"""``selfx evaluate``: run programs over a dataset and summarise accuracy, failures, coverage, cost."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import dspy

from metrics.accuracy import accuracy
from programs.data import load_examples
from programs.lean_adapter import LeanAdapter
from programs.lm import describe_lm, is_embedded, make_lm
from programs.readout import to_answer, to_attribution
from programs.self_explain import PROGRAM_NAMES, SentimentProgram
from programs.types import Example


def resolve_programs(choice: str) -> list[str]:
    if choice == "all":
        return list(PROGRAM_NAMES)
    names = [c.strip() for c in choice.split(",")]
    unknown = [n for n in names if n not in PROGRAM_NAMES]
    if unknown:
        raise ValueError(f"unknown program(s) {unknown}; choose from {list(PROGRAM_NAMES)} or all")
    return names


def evaluate_program(program: SentimentProgram, examples: Sequence[Example], lm: Any, *,
                     threads: int = 1, progress: bool = True) -> dict[str, Any]:
    """Run one program on every example; failures are counted and excluded from accuracy."""
    adapter = LeanAdapter() if is_embedded(lm) else dspy.JSONAdapter()
    history_start = len(lm.history)

    def run(example: Example) -> tuple[Any, Any]:
        with dspy.context(lm=lm, adapter=adapter):
            prediction = program(review=example.text)
        return to_answer(prediction), to_attribution(prediction, example.text)

    start = time.perf_counter()
    results: list[tuple[Any, Any]] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i, result in enumerate(pool.map(run, examples), 1):
            results.append(result)
            if progress and sys.stderr.isatty():
                print(f"\r{program.name}: {i}/{len(examples)}", end="", file=sys.stderr, flush=True)
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)
    seconds = time.perf_counter() - start
    answers = [a for a, _ in results]
    attributions = [att for _, att in results if att is not None]
    acc, scored = accuracy([a.label_int for a in answers], [e.label for e in examples])
    failures = [a for a in answers if not a.ok]
    tokens = sum(_tokens(entry) for entry in lm.history[history_start:])
    summary: dict[str, Any] = {
        "n": len(examples),
        "accuracy": acc,
        "n_scored": scored,
        "parse_failures": len(failures),
        "parse_failure_rate": len(failures) / len(examples),
        "token_coverage": (sum(a.coverage for a in attributions) / len(attributions)) if attributions else None,
        "range_violations": sum(a.info.get("range_violations", 0) for a in attributions),
        "positive_share": (sum(a.label == "positive" for a in answers if a.ok) / scored) if scored else None,
        "seconds_per_example": seconds / len(examples),
        "tokens_per_example": tokens / len(examples),
        "failures": [{"reason": a.failure, "raw": (a.raw or "")[:300]} for a in failures[:20]],
    }
    return summary


def evaluate(programs: str = "all", *, data: str = "sst2", n: int = 20, lm_spec: str = "local",
             api_base: str | None = None, value_mode: str = "sample") -> dict[str, Any]:
    examples = load_examples(data, split="validation", n=n)
    lm = make_lm(lm_spec, api_base=api_base, cache=False)
    threads = 1 if is_embedded(lm) else 8
    report: dict[str, Any] = {}
    for name in resolve_programs(programs):
        program = SentimentProgram(name, value_mode=value_mode)
        report[name] = {**describe_lm(lm), **evaluate_program(program, examples, lm, threads=threads)}
    return report


def _tokens(entry: dict[str, Any]) -> int:
    usage = entry.get("usage") or {}
    return int(usage.get("total_tokens") or (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)))
