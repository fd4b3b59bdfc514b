"""The DSPy optimisers a trial may compile its program with: BootstrapFewShot (with random search), MIPROv2, GEPA."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy

from experiments.optimize.objective import OptimizerMetric
from programs.lm import reflection_lm
from programs.self_explain import SentimentProgram
from programs.types import Example, InputError


def compile_with(optimizer: str, program: SentimentProgram, train: Sequence[Example], metric: OptimizerMetric,
                 lm: Any, budget: int, seed: int) -> SentimentProgram:
    """Run a DSPy optimiser on the program against ``metric`` on the train pool."""
    if optimizer == "none":
        return program
    trainset = [dspy.Example(review=e.text, label="positive" if e.label else "negative").with_inputs("review")
                for e in train]
    if not trainset:
        raise InputError(f"optimizer {optimizer!r} needs a train pool: set data.train_n > 0")
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
