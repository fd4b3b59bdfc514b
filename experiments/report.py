"""``selfx report``: one self-contained HTML page for a run, an experiment or an optimisation study.

Everything comes from what the runs logged in MLflow (metrics, ``examples.json``, ``explanations.json``,
the rendered prompts, the held-out comparison): the variants side by side with their CIs and baselines, the
paper variant marked; token heat-maps of the self-explanation, occlusion and LIME of the same sentences;
the accuracy-faithfulness trade-off; reliability diagrams; the agreement matrix between explainers; and every
variant's prompt as the model sees it. Figures are matplotlib images embedded in the page (it opens
offline); the page is rendered from a Jinja2 template and logged to the run as an artifact.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import plots, tracking
from experiments.config import PAPER
from experiments.measure import Explanation, agree
from metrics.calibration import reliability_curve
from metrics.modes import CORRECTED
from programs.types import Answer, InputError

HEATMAP_KINDS = ("self", "occlusion", "lime", "lexicon", "random")
# The variants table's estimate columns (metric key, header); the lexicon's appear when a variant measured it
COLUMNS = (("accuracy", "accuracy"), ("comprehensiveness_bins", "comprehensiveness"),
           ("random_comprehensiveness_bins", "random"), ("occlusion_comprehensiveness_bins", "occlusion"),
           ("comprehensiveness_bins_vs_random", "self − random"), ("spearman_vs_occlusion", "Spearman vs occlusion"))
LEXICON_COLUMNS = (("lexicon_comprehensiveness_bins", "lexicon"),
                   ("comprehensiveness_bins_vs_lexicon", "self − lexicon"))
SENTENCES = 6


def report_data(run_id: str, *, uri: str | None = None, sentences: int = SENTENCES) -> dict[str, Any]:
    """What the page shows, as plain data (the template only lays it out)."""
    run = tracking.run_data(run_id, uri)
    children = [c for c in run["children"] if c["tags"].get(tracking.VARIANT_TAG)]
    variants = children or [run]
    trials = [c for c in variants if "trial" in c["metrics"]]
    shown = [c for c in variants if "trial" not in c["metrics"]] or variants
    comparison = run["artifacts"].get("held_out_comparison.json") or {}
    lexicon = any(LEXICON_COLUMNS[0][0] in v["metrics"] for v in shown)
    return {
        "title": run["name"], "run": run, "generated": datetime.datetime.now().isoformat(timespec="seconds"),
        "description": run["tags"].get(tracking.NOTE_TAG, ""),
        "lexicon": lexicon, "columns": [*COLUMNS, *(LEXICON_COLUMNS if lexicon else ())],
        "variants": [_variant_row(v) for v in shown],
        "trials": [_variant_row(t) for t in trials],
        "comparison": comparison,
        "tradeoff": _tradeoff(shown, trials, comparison),
        "reliability": _reliability(shown),
        "heatmaps": [h for v in shown for h in _heatmaps(v, sentences)],
        "agreement": [a for v in shown if (a := _agreement(v)) is not None],
        "prompts": [{"name": v["tags"].get(tracking.VARIANT_TAG, v["name"]), "run": v["name"],
                     "text": v["artifacts"].get("prompts/predict.txt", "")} for v in shown],
    }


def _variant_row(run: dict[str, Any]) -> dict[str, Any]:
    m = run["metrics"]
    name = run["tags"].get(tracking.VARIANT_TAG, run["name"])
    return {"name": name, "run_name": run["name"], "run_id": run["run_id"], "paper": name == PAPER.name,
            "description": run["tags"].get(tracking.NOTE_TAG, ""), "metrics": m,
            "cells": {key: _estimate(m, key) for key, _ in (*COLUMNS, *LEXICON_COLUMNS)},
            "parse_failure_rate": m.get("parse_failure_rate"), "seconds_per_example": m.get("seconds_per_example"),
            "probe": run["params"].get("probe_mode")}


def _estimate(metrics: dict[str, float], key: str) -> dict[str, float | None] | None:
    if key not in metrics:
        return None
    return {"mean": metrics[key], "low": metrics.get(f"{key}_ci_low"), "high": metrics.get(f"{key}_ci_high")}


def _tradeoff(shown: Sequence[dict], trials: Sequence[dict], comparison: dict[str, Any]) -> str | None:
    points = []
    if comparison:
        for label, row in comparison.items():
            points.append({"label": f"{label}: {row['variant']}", "role": "paper" if label == "paper" else "chosen",
                           **_point(row)})
    else:
        for row in shown:
            points.append({"label": row["tags"].get(tracking.VARIANT_TAG, row["name"]),
                           "role": "paper" if row["tags"].get(tracking.VARIANT_TAG) == PAPER.name else "other",
                           **_point(row["metrics"])})
    dev = [(t["metrics"]["accuracy"], t["metrics"]["comprehensiveness_bins"]) for t in trials
           if t["metrics"].get("accuracy") is not None and t["metrics"].get("comprehensiveness_bins") is not None]
    if not any(p.get("comprehensiveness") is not None for p in points) and not dev:
        return None
    return plots.tradeoff_plot(points, dev)


def _point(m: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": m.get("accuracy"), "accuracy_low": m.get("accuracy_ci_low"),
            "accuracy_high": m.get("accuracy_ci_high"), "comprehensiveness": m.get("comprehensiveness_bins"),
            "comprehensiveness_low": m.get("comprehensiveness_bins_ci_low"),
            "comprehensiveness_high": m.get("comprehensiveness_bins_ci_high")}


def _examples(run: dict[str, Any]) -> list[dict[str, Any]]:
    table = run["artifacts"].get("examples.json")
    if not table:
        return []
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def _reliability(shown: Sequence[dict]) -> str | None:
    curves = {}
    for run in shown:
        confidence, correct = [], []
        for row in _examples(run):
            p = json.loads(row.get("p_positive") or "{}")
            p_pos = p.get("logprob", p.get("stated"))
            if row.get("prediction") is None or p_pos is None:
                continue
            confidence.append(p_pos if row["prediction"] == "positive" else 1 - p_pos)
            correct.append(row["prediction"] == row["gold"])
        if confidence:
            curves[run["tags"].get(tracking.VARIANT_TAG, run["name"])] = reliability_curve(confidence, correct)
    return plots.reliability_plot(curves) if curves else None


def _heatmaps(run: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Each sentence's explanations one under the other, every row scaled to [-1, 1] by its largest magnitude."""
    out = []
    for item in (run["artifacts"].get("explanations.json") or [])[:limit]:
        rows = []
        for kind in HEATMAP_KINDS:
            explanation = item.get(kind)
            if explanation is None and kind in item:
                rows.append({"kind": kind, "cells": [], "missing": "no explanation (failed answer)"})
                continue
            if explanation is None:
                continue
            values = _values(explanation, len(item["tokens"]))
            scale = max((abs(v) for v in values if v is not None), default=0.0) or 1.0
            rows.append({"kind": kind, "scale": scale, "cells": [
                {"token": token, "value": v, "colour": plots.diverging_colour(None if v is None else v / scale)}
                for token, v in zip(item["tokens"], values, strict=True)]})
        out.append({"variant": run["tags"].get(tracking.VARIANT_TAG, run["name"]), "review": item["review"],
                    "label": item.get("label"), "p_positive": item.get("p_positive"), "status": item.get("status"),
                    "rows": rows})
    return out


def _values(explanation: dict[str, Any], n: int) -> list[float | None]:
    """Values per position; a ranking-only (top-k) explanation shows its k words at decreasing strength."""
    if explanation.get("ranking") and not any(v is not None for v in explanation["values"]):
        values: list[float | None] = [None] * n
        for r, i in enumerate(explanation["ranking"]):
            values[i] = 1.0 - r / max(1, len(explanation["ranking"]))
        return values
    return list(explanation["values"])


def _agreement(run: dict[str, Any]) -> dict[str, Any] | None:
    """Rank correlation between the explainers of one variant's sentences, like the study's figure."""
    items = run["artifacts"].get("explanations.json") or []
    kinds = [k for k in HEATMAP_KINDS if any(item.get(k) for item in items)]
    if len(kinds) < 2:
        return None
    tokens = [item["tokens"] for item in items]
    explanations = {k: [None if item.get(k) is None else Explanation(tuple(item[k]["values"]),
                                                                      tuple(item[k]["ranking"] or ()) or None,
                                                                      topk=bool(item[k]["ranking"]))
                        for item in items] for k in kinds}
    decided = [Answer(label=item["label"]) if item.get("label") in ("negative", "positive") else None for item in items]
    table = agree(tokens, explanations, decided, mode=CORRECTED, pairs="all")
    metric = "rank_correlation" if not any(e is not None and e.topk for e in explanations["self"]) else \
        "feature_agreement"
    matrix = [[1.0 if a == b else (table.get(f"{a}~{b}") or table.get(f"{b}~{a}") or {}).get(metric)
               for b in kinds] for a in kinds]
    name = run["tags"].get(tracking.VARIANT_TAG, run["name"])
    return {"variant": name, "metric": metric, "image": plots.agreement_plot(kinds, matrix, f"{name}: {metric}")}


def render(data: dict[str, Any]) -> str:
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader("experiments", "templates"),
                                     autoescape=jinja2.select_autoescape(["html", "j2"]))
    # a figure a run did not log (a failed trial, a comparison without a p-value) reads "n/a"
    environment.filters["num"] = lambda v, digits=3: ("n/a" if v is None or isinstance(v, jinja2.Undefined)
                                                      else f"{v:.{digits}f}")
    return environment.get_template("report.html.j2").render(**data)


def build_report(run_id: str | None = None, *, experiment: str | None = None, out: Path | None = None,
                 uri: str | None = None, log: bool = True) -> Path:
    """Write the report of a run (or of an experiment's newest top-level run) and log it to that run."""
    if run_id is None:
        if experiment is None:
            raise InputError("selfx report needs a RUN_ID or --experiment NAME")
        runs = tracking.experiment_runs(experiment, uri)
        if not runs:
            raise tracking.RunNotFound(f"experiment {experiment!r} has no runs yet")
        run_id = runs[0]
    data = report_data(run_id, uri=uri)
    path = out or Path("results") / f"report-{data['title'].replace(' ', '_')}-{run_id[:8]}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data), encoding="utf-8")
    if log:
        tracking.log_report(run_id, path)
    return path
