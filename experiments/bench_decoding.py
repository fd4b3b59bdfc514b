"""Benchmark: where the embedded model's time goes, measured side by side in one run.

The cost model of skeleton decoding on this machine: one forward pass of 1 token, of 10 tokens
and of a whole prompt; a label-slot probe (what every perturbed text costs); and full explanations
(P-E and E-P, expected values, the default setup's demos) per review and per value slot, each as a
ratio to the one-token pass. Read it to see what a speed-up must attack (a value slot costs about
four one-token passes: the digit trie's branching points).

Run: ``python -m experiments.bench_decoding [--lm local] [--n 10] [--demos 16]``. Prints figures
and ratios; nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Sequence
from typing import Any

import dspy

from programs.data import load_examples
from programs.demos import build_demos
from programs.lean_adapter import LeanAdapter
from programs.lm import make_lm
from programs.probe import ProgramProbe
from programs.probe_cache import ProbeCache
from programs.self_explain import SentimentProgram
from programs.signatures import SIGNATURES
from programs.types import Example


def _explain(lm: Any, program: SentimentProgram, examples: Sequence[Example]) -> tuple[list[float], list[Any]]:
    seconds, predictions = [], []
    with dspy.context(lm=lm, adapter=LeanAdapter()):
        for example in examples:
            started = time.perf_counter()
            predictions.append(program(review=example.text))
            seconds.append(time.perf_counter() - started)
    return seconds, predictions


def _per_call(run: Any, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - started) / repeats


def bench(lm_spec: str = "local", n: int = 10, demos: int = 16, seed: int = 0) -> dict[str, Any]:
    examples = load_examples("sst2", split="validation", n=n)
    lm = make_lm(lm_spec, cache=False)
    engine = lm.engine
    llm = engine._loaded().llm
    probe = ProgramProbe(SentimentProgram("P"), lm, mode="logprob", cache=None)
    prompt = engine.prompt_tokens(probe.adapter.format(SIGNATURES["P"], [], {"review": examples[0].text}))

    def tail(k: int) -> Any:
        def run() -> None:
            llm.n_tokens = len(prompt) - k
            llm.eval(prompt[-k:])
        return run

    with engine._loaded().lock:
        llm.reset()
        llm.eval(prompt)
        one = _per_call(tail(1), 20)
        out: dict[str, Any] = {"lm": lm_spec, "n": n, "demos": demos, "one_token_pass_ms": 1000 * one,
                               "ten_token_pass_ratio": _per_call(tail(10), 10) / one,
                               f"whole_prompt_pass_ratio ({len(prompt)} tokens)": _per_call(tail(len(prompt)), 3) / one}
    reviews = itertools.cycle([e.text for e in examples])
    out["label_slot_probe_ratio"] = _per_call(lambda: probe._ask(next(reviews)), 20) / one
    for name in ("PE", "EP"):
        program = SentimentProgram(name, value_mode="expected")
        if demos:
            with dspy.context(lm=lm, adapter=LeanAdapter()):
                program.predict.demos = build_demos(name, demos, lm=lm, source="occlusion", seed=seed,
                                                    cache=ProbeCache())
        _explain(lm, program, examples[:1])  # warm: the demos' KV prefix
        seconds, _ = _explain(lm, program, examples)
        per_slot = statistics.median(seconds) / statistics.median(len(e.tokens) for e in examples)
        out[f"{name}_median_s_per_review"] = statistics.median(seconds)
        out[f"{name}_value_slot_ratio"] = per_slot / one
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_decoding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", default="local")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--demos", type=int, default=16)
    args = parser.parse_args(argv)
    result = bench(args.lm, args.n, args.demos)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
