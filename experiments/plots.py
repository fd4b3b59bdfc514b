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


def png_data_uri(fig: Any) -> str:
    """A figure as an embeddable ``data:`` URI (the report opens offline)."""
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def diverging_colour(value: float | None) -> str:
    """A value in [-1, 1] on the report's diverging scale (red negative, blue positive); grey when missing."""
    if value is None:
        return "#dddddd"
    from matplotlib import colormaps, colors

    return colors.to_hex(colormaps["RdBu"]((max(-1.0, min(1.0, value)) + 1) / 2))


def tradeoff_plot(points: Sequence[dict[str, Any]], trials: Sequence[tuple[float, float]] = ()) -> str:
    """Accuracy against comprehensiveness with 95 % CIs as error bars; each point a dict with ``label``,
    ``accuracy``/``comprehensiveness`` and their ``_low``/``_high``, and a ``role`` (paper, chosen or other)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if trials:
        ax.scatter([t[0] for t in trials], [t[1] for t in trials], color="#bbbbbb", s=14, label="trials (dev)")
    styles = {"paper": ("#c0392b", "s", "paper variant"), "chosen": ("#1f77b4", "o", "chosen trade-off"),
              "other": ("#555555", "o", "variant")}
    shown = set()
    for p in points:
        if p.get("accuracy") is None or p.get("comprehensiveness") is None:
            continue
        colour, marker, legend = styles[p.get("role", "other")]
        xerr = [[p["accuracy"] - p.get("accuracy_low", p["accuracy"])],
                [p.get("accuracy_high", p["accuracy"]) - p["accuracy"]]]
        yerr = [[p["comprehensiveness"] - p.get("comprehensiveness_low", p["comprehensiveness"])],
                [p.get("comprehensiveness_high", p["comprehensiveness"]) - p["comprehensiveness"]]]
        ax.errorbar(p["accuracy"], p["comprehensiveness"], xerr=xerr, yerr=yerr, fmt=marker, color=colour,
                    capsize=3, label=None if legend in shown else legend)
        shown.add(legend)
        ax.annotate(p["label"], (p["accuracy"], p["comprehensiveness"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.axhline(0, color="#999999", lw=0.6)
    ax.set_xlabel("accuracy (95 % CI)")
    ax.set_ylabel("comprehensiveness, ERASER bins (95 % CI)")
    ax.legend(fontsize=8)
    return png_data_uri(fig)


def reliability_plot(curves: dict[str, list[tuple[float, float, int]]]) -> str:
    """Reliability diagrams: for each variant, (mean confidence, accuracy, count) per confidence bin."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.plot([0.5, 1], [0.5, 1], color="#999999", lw=0.8, ls="--", label="perfect calibration")
    for name, points in curves.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", ms=3, label=name)
    ax.set_xlabel("confidence in the decided label")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.45, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6)
    return png_data_uri(fig)


def agreement_plot(kinds: Sequence[str], matrix: Sequence[Sequence[float | None]], title: str) -> str:
    """An agreement matrix between explainers as a heat-map, like the study's figure."""
    import numpy as np

    plt = _pyplot()
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix], float)
    fig, ax = plt.subplots(figsize=(3.8, 3.3))
    image = ax.imshow(values, cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xticks(range(len(kinds)), kinds, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
    for i in range(len(kinds)):
        for j in range(len(kinds)):
            if not np.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return png_data_uri(fig)
