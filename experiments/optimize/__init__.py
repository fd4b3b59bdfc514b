"""``selfx optimize``: a multi-objective Optuna study over the variant space, one module per job.

``objective`` (what a DSPy optimiser maximises per example, and a trial's dev objectives), ``compile``
(the DSPy optimisers), ``search`` (the Optuna loop and its MLflow runs), ``held_out`` (the chosen
trade-offs against the paper variant on held-out sentences, with paired tests).
"""

from experiments.optimize.search import optimize

__all__ = ["optimize"]
