"""``selfx replay``: the study's faithfulness and agreement tables recomputed from its recorded data.

No LM: every perturbed text is answered by the replay probe from the study's caches. A text the
study never asked (a ranking it did not use) is *not recorded*: the metric is not computable for
that sentence and is counted, never filled in. In corrected mode a recorded (0, 0.5), the study's
parse-failure default, counts as a failure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from experiments.measure import Explanation, measure
from metrics.faithfulness import FAITHFULNESS_METRICS
from metrics.modes import COMPAT, MetricMode, metric_mode
from programs.data import DataError, load_examples, shared_data_dir
from programs.explainers.random import RandomExplainer
from programs.recorded_probe import REPLAY_MODELS, RecordedProbe
from programs.types import InputError

_FILES = {"self": "self_expl_{o}", "topk": "topk_{o}", "occlusion": "occlusion_{o}", "lime": "lime_{o}"}
_ORDER_TAGS = {"P-E": "pe", "E-P": "ep"}


def _rows(model: str, kind: str, order: str) -> list[dict[str, Any]]:
    name = _FILES[kind].format(o=_ORDER_TAGS.get(order, "p")) if order in _ORDER_TAGS else "occlusion_p"
    path = shared_data_dir() / "huang2023" / model / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(f"recorded file not found: {path}")
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    return sorted(rows, key=lambda r: r["idx"])


def recorded_explanation(kind: str, row: dict[str, Any], n: int, mode: MetricMode) -> Explanation:
    """One recorded explanation as the mode consumes it.

    compat: exactly what the study's metric code used (noised values, recorded rankings, top-k
    padded with random positions). corrected: noise-free values (None where uncovered), top-k as
    its k positions only.
    """
    if mode.noise:  # the study's mode: its noised values and rankings
        if kind in ("self", "topk"):
            values: list[float | None] = [0.0] * n
            for p, v in row["repo_ranking"]:
                values[int(p)] = float(v)
            return Explanation(tuple(values), tuple(int(p) for p, _ in row["repo_ranking"]))
        return Explanation(tuple(float(v) for v in row["values_recorded"]),
                           tuple(int(p) for p in row["ranking_recorded"]))
    if kind == "self":
        return Explanation(tuple(row["aligned_importance"]))
    if kind == "topk":
        return Explanation((None,) * n, tuple(int(p) for p in row["topk_positions"]), topk=True)
    if kind == "occlusion":
        return Explanation(tuple(row.get("values_noise_free") or row["values_recorded"]))
    available = row.get("lime_weight_available") or [True] * n
    return Explanation(tuple(float(v) if ok else None for v, ok in zip(row["values_recorded"], available, strict=True)))


def _recorded(model: str, order: str, kinds: Sequence[str], mode: MetricMode,
              tokens: Sequence[Sequence[str]]) -> dict[str, list[Explanation]]:
    out = {kind: [recorded_explanation(kind, row, len(t), mode)
                  for row, t in zip(_rows(model, kind, order), tokens, strict=True)]
           for kind in kinds if kind != "random"}
    if "random" in kinds:
        random = RandomExplainer(seed=0)
        out["random"] = [Explanation(random.explain(t).values) for t in tokens]
    return out


def _replay_mode(model: str, mode: MetricMode) -> MetricMode:
    # the GPT-4o file adds +0.5 for the empty text (digest 2.1)
    return mode.with_plus_half() if mode is COMPAT and model == "gpt4o" else mode


def _measure_order(model: str, order: str, kinds: Sequence[str], mode: MetricMode, seed: int, *,
                   agreement: bool) -> Any:
    sentences = load_examples("huang2023")
    tokens = [s.text.split(" ") for s in sentences]
    probe = RecordedProbe(model, order, recorded_default_as_failure=not mode.failure_as_default)
    # corrected mode measures top-k by the paper's single step; compat by the 2024 code's padded ranking
    return measure(tokens, _recorded(model, order, kinds, mode, tokens), probe, mode=mode,
                   topk="padded" if mode.noise else "single-step", agreement="all" if agreement else (),
                   originals=probe.answers([s.text for s in sentences]), seed=seed)


def replay_study(model: str, mode_name: str, *, seed: int = 0) -> dict[str, Any]:
    """Faithfulness (per order and explanation, random baseline included) and agreement tables."""
    if model not in REPLAY_MODELS:
        raise InputError(f"no recorded caches for {model!r}; choose one of {list(REPLAY_MODELS)}")
    mode = _replay_mode(model, metric_mode(mode_name))
    faithfulness: dict[str, dict[str, Any]] = {}
    agreements: dict[str, dict[str, Any]] = {}
    for order in ("P-E", "E-P", "P"):
        if order == "P" and not (shared_data_dir() / "huang2023" / model / "occlusion_p.jsonl").is_file():
            faithfulness["P occlusion"] = {"not_recorded": True}  # GPT-4o: no P-only occlusion file
            continue
        kinds = ("self", "topk", "occlusion", "lime", "random") if order in _ORDER_TAGS else ("occlusion", "random")
        measured = _measure_order(model, order, kinds, mode, seed, agreement=order in _ORDER_TAGS)
        faithfulness.update({f"{order} {kind}": row for kind, row in measured.summary.items()})
        agreements.update({f"{order} {pair}": row for pair, row in measured.agreement.items()})
    return {"model": model, "mode": mode.name, "n_sentences": len(load_examples("huang2023")),
            "faithfulness": faithfulness, "agreement": agreements}


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

    base_mode = _replay_mode(model, COMPAT)
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
    out = {}
    for config in configs:
        order, kind = config.split(" ")
        # the ablation measures every configuration with the study's full protocol
        measured = _measure_order(model, order, (kind,), mode, seed, agreement=False)
        out[config] = measured.summary[kind]
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
