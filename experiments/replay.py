"""``selfx replay``: the study's faithfulness and agreement tables recomputed from its recorded data.

No LM: every perturbed text is answered by the replay probe from the study's caches. A text the
study never asked (a ranking it did not use) is *not recorded*: the metric is not computable for
that sentence and is counted, never filled in. In corrected mode a recorded (0, 0.5), the study's
parse-failure default, counts as a failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from experiments.faithfulness_run import (
    EXPLANATIONS,
    FAITHFULNESS_METRICS,
    aggregate,
    agreement_table,
    sentence_faithfulness,
)
from metrics.agreement import AGREEMENT_METRICS
from metrics.modes import COMPAT, MetricMode, metric_mode
from programs.data import DataError, load_examples, shared_data_dir
from programs.explainers.random import RandomExplainer
from programs.replay import REPLAY_MODELS, ReplayProbe

_FILES = {"self": "self_expl_{o}", "topk": "topk_{o}", "occlusion": "occlusion_{o}", "lime": "lime_{o}"}
_ORDER_TAGS = {"P-E": "pe", "E-P": "ep"}


def _rows(model: str, kind: str, order: str) -> list[dict[str, Any]]:
    name = _FILES[kind].format(o=_ORDER_TAGS.get(order, "p")) if order in _ORDER_TAGS else "occlusion_p"
    path = shared_data_dir() / "huang2023" / model / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(f"recorded file not found: {path}")
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    return sorted(rows, key=lambda r: r["idx"])


def recorded_explanation(kind: str, row: dict[str, Any], n: int,
                         mode: MetricMode) -> tuple[list[float | None] | None, list[int] | None]:
    """(values, ranking) of one recorded explanation as the mode consumes it.

    compat: exactly what the study's metric code used (noised values, recorded rankings, top-k
    padded with random positions). corrected: noise-free values (None where uncovered), top-k as
    its k positions only.
    """
    if mode.noise:  # the study's mode: its noised values and rankings
        if kind in ("self", "topk"):
            ranking = [int(p) for p, _ in row["repo_ranking"]]
            values: list[float | None] = [0.0] * n
            for p, v in row["repo_ranking"]:
                values[int(p)] = float(v)
            return values, ranking
        return [float(v) for v in row["values_recorded"]], [int(p) for p in row["ranking_recorded"]]
    if kind == "self":
        return row["aligned_importance"], None
    if kind == "topk":
        return None, [int(p) for p in row["topk_positions"]]
    if kind == "occlusion":
        return row.get("values_noise_free") or row["values_recorded"], None
    available = row.get("lime_weight_available") or [True] * n
    return [float(v) if ok else None for v, ok in zip(row["values_recorded"], available)], None


def _explanations(model: str, order: str, mode: MetricMode, tokens: Sequence[Sequence[str]]) -> dict[str, list]:
    out: dict[str, list] = {}
    kinds = EXPLANATIONS if order in _ORDER_TAGS else ("occlusion",)
    for kind in kinds:
        rows = _rows(model, kind, order)
        out[kind] = [recorded_explanation(kind, row, len(t), mode) for row, t in zip(rows, tokens)]
    random = RandomExplainer(seed=0)
    out["random"] = [(list(random.explain(t).values), None) for t in tokens]
    return out


def replay_study(model: str, mode_name: str, *, seed: int = 0) -> dict[str, Any]:
    """Faithfulness (per order and explanation, random baseline included) and agreement tables."""
    if model not in REPLAY_MODELS:
        raise ValueError(f"no recorded caches for {model!r}; choose one of {list(REPLAY_MODELS)}")
    mode = metric_mode(mode_name)
    if mode is COMPAT and model == "gpt4o":
        mode = mode.with_plus_half()  # the GPT-4o file adds +0.5 for the empty text (digest 2.1)
    sentences = load_examples("huang2023")
    tokens = [s.text.split(" ") for s in sentences]
    faithfulness: dict[str, dict[str, Any]] = {}
    agreements: dict[str, dict[str, Any]] = {}
    for order in ("P-E", "E-P", "P"):
        if order == "P" and not (shared_data_dir() / "huang2023" / model / "occlusion_p.jsonl").is_file():
            faithfulness["P occlusion"] = {"not_recorded": True}  # GPT-4o: no P-only occlusion file
            continue
        probe = ReplayProbe(model, order)

        def lookup(texts: Sequence[str], probe: ReplayProbe = probe) -> list:
            return probe.lookup(texts, recorded_default_as_failure=not mode.failure_as_default)

        originals = lookup([s.text for s in sentences])
        explanations = _explanations(model, order, mode, tokens)
        for kind, items in explanations.items():
            rows = [sentence_faithfulness(t, values if values is not None else [None] * len(t), ranking, original,
                                          lookup, mode, topk_single_step=(kind == "topk" and not mode.noise),
                                          seed=seed + i)
                    for i, (t, (values, ranking), original) in enumerate(zip(tokens, items, originals))]
            faithfulness[f"{order} {kind}"] = aggregate(rows, FAITHFULNESS_METRICS, seed=seed)
        if order in _ORDER_TAGS:
            agreements.update(agreement_table(order, explanations, originals, tokens, mode, seed))
    return {"model": model, "mode": mode.name, "n_sentences": len(sentences), "faithfulness": faithfulness,
            "agreement": agreements}


def markdown_tables(report: dict[str, Any]) -> str:
    """The report as markdown: mean [95 % CI] (n used / excluded) per cell."""
    # a live study reports its backend; a replay does not
    heading = (f"Live study (Huang et al. 2023 protocol): {report['model']}, {report['n_sentences']} sentences"
               if "backend" in report else f"Replay of Huang et al. (2023): {report['model']}")
    lines = [f"# {heading}, {report['mode']} mode", ""]
    for title, table, metrics in (("Faithfulness", report["faithfulness"], FAITHFULNESS_METRICS),
                                  ("Agreement", report["agreement"], AGREEMENT_METRICS)):
        lines += [f"## {title}", "", "| configuration | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for name, row in table.items():
            lines.append(f"| {name} | " + " | ".join(_cell(row, m) for m in metrics) + " |")
        lines.append("")
    lines.append("Cells: mean [95 % bootstrap CI] (sentences used, excluded as not recorded or failed); "
                 "the `random` rows are the random-explanation baseline.")
    return "\n".join(lines) + "\n"


def _cell(row: dict[str, Any], metric: str) -> str:
    if row.get("not_recorded"):
        return "not recorded"
    if metric not in row or row[metric] is None:
        return "n/a" if metric not in row else f"n/a (0/{row.get(f'{metric}_excluded', 0)})"
    return (f"{row[metric]:.3f} [{row[f'{metric}_ci_low']:.3f}, {row[f'{metric}_ci_high']:.3f}] "
            f"({row[f'{metric}_n']}/{row[f'{metric}_excluded']})")


def write_outputs(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """CSV (one row per configuration and metric) and markdown files."""
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    # a live study's model name may be a path or "provider/model"
    model = str(report["model"]).replace("/", "_").replace("\\", "_")
    stem = f"{'study' if 'backend' in report else 'replay'}_{model}_{report['mode']}"
    md = out_dir / f"{stem}.md"
    md.write_text(markdown_tables(report), encoding="utf-8")
    path = out_dir / f"{stem}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["table", "configuration", "metric", "mean", "ci_low", "ci_high", "n", "excluded"])
        for table in ("faithfulness", "agreement"):
            for name, row in report[table].items():
                for metric in [k for k in row if f"{k}_ci_low" in row]:
                    writer.writerow([table, name, metric, row[metric], row[f"{metric}_ci_low"],
                                     row[f"{metric}_ci_high"], row[f"{metric}_n"], row[f"{metric}_excluded"]])
    return [md, path]


SWITCHES = (  # (MetricMode field, digest defect numbers)
    ("p0_reconverted", "1"),
    ("empty_term_plus_half", "1 (GPT-4o file)"),
    ("class_aware", "3"),
    ("empty_assumed_half", "5"),
    ("df_mit_crossing", "4"),
    ("rankdel_raw_confidence", "2"),
    ("noise", "14"),
    ("failure_as_default", "9"),
    ("sufficiency_absolute", "6"),
)


def switch_ablation(model: str, *, configs: Sequence[str] = ("P-E self", "E-P self", "P-E occlusion", "P-E lime"),
                    seed: int = 0) -> list[dict[str, Any]]:
    """How far each corrected-mode switch alone moves each metric from compat, on the replay data."""
    from dataclasses import replace

    base_mode = COMPAT.with_plus_half() if model == "gpt4o" else COMPAT
    base = _faithfulness_only(model, base_mode, configs, seed)
    rows = []
    for field, defect in SWITCHES:
        corrected_value = getattr(metric_mode("corrected"), field)
        if getattr(base_mode, field) == corrected_value:
            continue
        toggled = _faithfulness_only(model, replace(base_mode, **{field: corrected_value}), configs, seed)
        for config in configs:
            for metric in FAITHFULNESS_METRICS:
                before, after = base[config].get(metric), toggled[config].get(metric)
                if before == after and base[config].get(f"{metric}_n") == toggled[config].get(f"{metric}_n"):
                    continue  # this switch does not touch this metric
                rows.append({"switch": field, "defect": defect, "configuration": config, "metric": metric,
                             "compat": before, "switched": after,
                             "delta": None if before is None or after is None else after - before,
                             "n_switched": toggled[config].get(f"{metric}_n")})
    return rows


def _faithfulness_only(model: str, mode: MetricMode, configs: Sequence[str], seed: int) -> dict[str, dict]:
    sentences = load_examples("huang2023")
    tokens = [s.text.split(" ") for s in sentences]
    out = {}
    for config in configs:
        order, kind = config.split(" ")
        probe = ReplayProbe(model, order)

        def lookup(texts: Sequence[str], probe: ReplayProbe = probe) -> list:
            return probe.lookup(texts, recorded_default_as_failure=not mode.failure_as_default)

        originals = lookup([s.text for s in sentences])
        rows = _rows(model, kind, order)
        items = [recorded_explanation(kind, row, len(t), mode) for row, t in zip(rows, tokens)]
        metrics = [sentence_faithfulness(t, v if v is not None else [None] * len(t), rk, o, lookup, mode, seed=seed + i)
                   for i, (t, (v, rk), o) in enumerate(zip(tokens, items, originals))]
        out[config] = aggregate(metrics, FAITHFULNESS_METRICS, seed=seed)
    return out


def ablation_markdown(model_rows: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["# compat vs corrected: what each switch changes",
             "",
             "Generated by `selfx replay --differences` from `../shared/data/huang2023` (no LM). Each row turns",
             "one switch of `metrics/modes.py` from the study's behaviour (compat) to the corrected one, all",
             "others left as compat, and shows the mean over the study's 100 sentences before and after, with",
             "the number of sentences still computable (a switch that needs texts the study never queried,",
             "such as a class-aware ranking, leaves fewer). Defect numbers refer to section 4 of the digest.",
             ""]
    for model, rows in model_rows.items():
        lines += [f"## {model}", "", "| switch (defect) | configuration | metric | compat | switched | delta | n |",
                  "|---|---|---|---|---|---|---|"]
        for row in rows:
            def fmt(v: float | None) -> str:
                return "n/a" if v is None else f"{v:.3f}"
            lines.append(f"| {row['switch']} ({row['defect']}) | {row['configuration']} | {row['metric']} | "
                         f"{fmt(row['compat'])} | {fmt(row['switched'])} | {fmt(row['delta'])} | {row['n_switched']} |")
        lines.append("")
    return "\n".join(lines)
