"""Figures (matplotlib, headless): the Pareto plot of an optimisation study."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_plot(trials: Sequence[Any], front: Sequence[Any], objectives: Sequence[str], title: str) -> Path | None:
    """Trials (Optuna FrozenTrials) in the plane of two objectives, the Pareto front joined; None unless there
    are exactly two objectives."""
    if len(objectives) != 2:
        return None
    plt = _pyplot()
    finite = [t for t in trials if t.values and all(abs(v) != float("inf") for v in t.values)]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([t.values[0] for t in finite], [t.values[1] for t in finite], color="#999", label="trials")
    pareto = sorted([t for t in front if t in finite], key=lambda t: t.values[0])
    ax.plot([t.values[0] for t in pareto], [t.values[1] for t in pareto], "o-", color="#c0392b", label="Pareto front")
    for t in finite:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"{objectives[0]} (dev)")
    ax.set_ylabel(f"{objectives[1]} (dev)")
    ax.set_title(f"{title}: accuracy vs faithfulness")
    ax.legend()
    path = Path(tempfile.mkdtemp()) / "pareto.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
