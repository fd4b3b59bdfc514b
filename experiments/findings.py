"""The measured tables of ``docs/findings.md``, rendered from the JSON files in ``docs/measurements/``.

``docs/measurements/measure.sh`` holds the commands that write those files. In ``findings.md`` every table
sits between ``<!-- table: NAME -->`` and ``<!-- end: NAME -->``; ``python -m experiments.findings`` rewrites
those blocks and ``--check`` fails when one is stale, so a table cannot drift from its measurement. The
prose around them is written by hand from the same tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from experiments.config import Variant
from experiments.measure import paired_against_baselines
from metrics.stats import paired_accuracy
from programs.embedded_models import DEFAULT_SETUP
from programs.self_explain import explains_first
from programs.signatures import RESTATED
from programs.types import LABELS

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ROOT / "docs" / "findings.md"
MEASUREMENTS = ROOT / "docs" / "measurements"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)
PROGRAMS = {"P": "P", "PE": "P-E", "EP": "E-P", "PE-topk": "P-E top-k", "EP-topk": "E-P top-k"}
SHARE = "comprehensiveness_bins_share_of_occlusion"
LEXICON_SHARE = "lexicon_" + SHARE
DEMO_SOURCE_NAMES = {"occlusion": "teacher", "self": "own answers", "lexicon": "lexicon"}


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(row: Mapping[str, Any], key: str, digits: int = 3) -> str:
    if row.get(key) is None:
        return "n/a"
    low, high = _num(row.get(key + "_ci_low"), digits), _num(row.get(key + "_ci_high"), digits)
    return f"{_num(row[key], digits)} [{low}, {high}]"


def _vs_baseline(row: Mapping[str, Any], baseline: str = "random") -> str:
    """The paired difference self - random (or another baseline) with its CI and permutation p."""
    key = f"comprehensiveness_bins_vs_{baseline}"
    return f"{_ci(row, key)}, p {_num(row.get(key + '_p_value'))}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _evaluations(folder: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(file stem, program, row) of every ``selfx evaluate --json`` file, in file-name order."""
    out = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for program, row in data.items():
            if isinstance(row, dict) and "accuracy" in row and "format" in row:
                out.append((path.stem, program, row))
    return out


def _data(row: Mapping[str, Any]) -> str:
    """Which sentences: the study's 100 (huang2023) or the first n of SST-2 validation, or those after the first
    ``skip`` (files written before evaluate recorded ``data`` are all SST-2, before ``skip``, none skipped)."""
    data = row.get("data", "sst2")
    name = "the study's sentences" if data == "huang2023" else "SST-2 validation" if data == "sst2" else data
    return name + (f" after the first {row['skip']}" if row.get("skip") else "")


def _program(program: str, row: Mapping[str, Any]) -> str:
    """The program's name, whether its answer restates the review before the label (E-P since that field
    exists; files written before evaluate recorded ``answer_fields`` predate it), over how many sampled
    explanations its label was read (none before ``explanation_samples`` was recorded), where its demos'
    explanations came from when not from the teacher (the default), how many demos it had when not the embedded
    default setup's number and which draw of demos it had when not the default's (seed 0; files written before
    ``demo_seed`` was recorded had seed 0)."""
    restated = RESTATED in row.get("answer_fields", ())
    samples = row.get("explanation_samples") or 0
    source = row.get("demo_source") or "occlusion"
    seed = row.get("demo_seed") or 0
    count = row.get("demos")
    number = f"{count} " if count and count != DEFAULT_SETUP.demos else ""
    demos = (f", {number}{DEMO_SOURCE_NAMES[source]} demos" if source not in ("occlusion", "label")
             else f", {number}demos" if number else "")
    return (PROGRAMS.get(program, program) + (", review restated" if restated else "") + _label_over(samples)
            + demos + (f" (draw {seed})" if seed else ""))


def _label_over(samples: int) -> str:
    return f", label over {samples} sampled explanations" if samples else ""


def self_explanations(folder: Path) -> str:
    """Faithfulness of self-explanations through the explained program's own probe, baselines beside them."""
    header = ["model", "data", "program", "format", "n", "accuracy", "comprehensiveness (bins)", "random", "occlusion",
              "LIME", "self - random (paired)", "self - occlusion (paired)", "self / occlusion",
              "Spearman vs own occlusion", "s/review (median)", "probe reading", "file"]
    rows = []
    for stem, program, r in _evaluations(folder):
        if "comprehensiveness_bins" not in r:
            continue
        occlusion = r.get("occlusion_comprehensiveness_bins")
        # with its paired CI since evaluate reports it; older files give the point share only
        share = (_ci(r, SHARE, 2) if r.get(SHARE) is not None
                 else _num(r["comprehensiveness_bins"] / occlusion if occlusion else None, 2))
        rows.append([r["model"], _data(r), _program(program, r), r["format"], str(r["n"]), _num(r["accuracy"]),
                     _ci(r, "comprehensiveness_bins"), _ci(r, "random_comprehensiveness_bins"),
                     _ci(r, "occlusion_comprehensiveness_bins"), _ci(r, "lime_comprehensiveness_bins"),
                     _vs_baseline(r),
                     _ci(r, "comprehensiveness_bins_vs_occlusion"), share,
                     _ci(r, "spearman_vs_occlusion"), _num(r["seconds_per_example_median"], 2),
                     r.get("probe_reading", "n/a"), f"`{stem}.json`"])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def demo_draws(folder: Path) -> str:
    """One setup measured with several draws of its demos (``evaluate --demo-seed``) on the same sentences: each
    draw's accuracy and share of own occlusion, and the figures of the draws taken together, each sentence's
    comprehensiveness (self, random, occlusion) averaged over the draws before the paired comparison. The CIs
    are over sentences for these draws; they do not treat the draws as a sample of all draws."""
    header = ["model", "data", "program", "format", "n", "draws (demo seeds)", "accuracy by draw",
              "self / occlusion by draw", "comprehensiveness (bins), mean over draws", "random", "occlusion",
              "self - random (paired)", "self / occlusion", "files"]
    rows = []
    for (_, program, *_), sentences in _draws(folder).items():
        for runs in sentences.values():
            if len(runs) < 2:
                continue
            mean, pooled = _pooled(runs)
            first = runs[0][1]
            rows.append([first["model"], _data(first), _program(program, {**first, "demo_seed": 0}),
                         first["format"], str(first["n"]), ", ".join(str(_seed(r)) for _, r in runs),
                         ", ".join(_num(r["accuracy"]) for _, r in runs),
                         ", ".join(_num(r.get(SHARE), 2) for _, r in runs),
                         _num(_mean(mean["self"])), _num(_mean(mean["random"])), _num(_mean(mean["occlusion"])),
                         _vs_baseline(pooled),
                         _ci(pooled, SHARE, 2), ", ".join(f"`{stem}.json`" for stem, _ in runs)])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def chosen_draw(folder: Path) -> str:
    """The draw of demos chosen on development sentences and what it reaches held out. For a setup measured with
    several draws on sentences apart from the held-out ones (``evaluate --skip``), the draw with the highest
    share of its own occlusion there is chosen (the lowest seed on a tie); each row gives that draw's figures on
    another set of sentences, beside every draw measured there taken together (:func:`demo_draws`)."""
    header = ["model", "program", "format", "chosen on", "share of own occlusion by draw there", "chosen draw",
              "held out", "n", "accuracy", "self - random (paired)", "self / occlusion",
              "all draws measured there: self / occlusion", "file"]
    rows = []
    for (_, program, *_), sentences in _draws(folder).items():
        for (data, skip, n), dev in sentences.items():
            if not skip or len(dev) < 2:
                continue
            chosen = max(dev, key=lambda run: (run[1].get(SHARE) or 0.0, -_seed(run[1])))[1]
            for (other, other_skip, other_n), runs in sentences.items():
                if other == data and other_skip < skip + n and skip < other_skip + other_n:
                    continue  # overlaps the development sentences
                held = next(((stem, r) for stem, r in runs if _seed(r) == _seed(chosen)), None)
                cells = ([_num(held[1]["accuracy"]), _vs_baseline(held[1]), _ci(held[1], SHARE, 2)] if held
                         else ["not measured"] * 3)
                everyone = (f"{_ci(_pooled(runs)[1], SHARE, 2)} (draws {', '.join(str(_seed(r)) for _, r in runs)})"
                            if len(runs) > 1 else "n/a")
                rows.append([chosen["model"], _program(program, {**chosen, "demo_seed": 0}), chosen["format"],
                             f"{_data(chosen)}, {n}",
                             ", ".join(f"{_seed(r)}: {_num(r.get(SHARE), 2)}" for _, r in dev), str(_seed(chosen)),
                             _data(runs[0][1]), str(other_n), *cells, everyone,
                             f"`{held[0]}.json`" if held else "n/a"])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def _seed(row: Mapping[str, Any]) -> int:
    return row.get("demo_seed") or 0


Runs = list[tuple[str, dict[str, Any]]]


def _draws(folder: Path) -> dict[tuple[Any, ...], dict[tuple[str, int, int], Runs]]:
    """Faithfulness runs with demos, by setup (model, program, format, demos and their source, decision rule,
    value mode, probe) and then by sentences (data, skip, n), each set's draws in seed order."""
    setups: dict[tuple[Any, ...], dict[tuple[str, int, int], Runs]] = {}
    for stem, program, r in _evaluations(folder):
        if "comprehensiveness_bins" in r and r.get("examples") and r.get("demos"):
            setup = (r["model"], program, r["format"], r["demos"], r.get("demo_source") or "occlusion",
                     r.get("decision"), r.get("value_mode"), r.get("probe_mode"), r.get("probe_reading"),
                     r.get("explanation_samples"))
            sentences = (r.get("data", "sst2"), r.get("skip") or 0, r["n"])
            setups.setdefault(setup, {}).setdefault(sentences, []).append((stem, r))
    for sentences in setups.values():
        for runs in sentences.values():
            runs.sort(key=lambda run: _seed(run[1]))
            seeds = [_seed(r) for _, r in runs]
            if len(set(seeds)) < len(seeds):
                raise ValueError(f"{[stem for stem, _ in runs]}: the same draw measured twice; keep one file per "
                                 "draw")
            ids = [e["id"] for e in runs[0][1]["examples"]]
            if any([e["id"] for e in r["examples"]] != ids for _, r in runs):
                raise ValueError(f"{[stem for stem, _ in runs]}: draws measured on different sentences")
    return setups


def _pooled(runs: Runs) -> tuple[dict[str, list[dict[str, float | None]]], dict[str, Any]]:
    """Each sentence's comprehensiveness (self, random, occlusion, and the lexicon where every draw measured it)
    averaged over the draws, and the paired comparison of those means."""
    count = len(runs[0][1]["examples"])
    kinds = ("self", "random", "occlusion", *(("lexicon",) if all(_has_lexicon(r) for _, r in runs) else ()))
    mean = {kind: [{"comprehensiveness_bins": _mean_over_draws([r["examples"][i].get(kind) for _, r in runs])}
                   for i in range(count)] for kind in kinds}
    return mean, paired_against_baselines(mean)


def _has_lexicon(row: Mapping[str, Any]) -> bool:
    return row.get("lexicon_comprehensiveness_bins") is not None


def _mean_over_draws(rows: list[Mapping[str, float | None] | None]) -> float | None:
    """A sentence's comprehensiveness averaged over the draws; None unless every draw measured it."""
    values = [row.get("comprehensiveness_bins") if row else None for row in rows]
    return None if None in values else sum(values) / len(values)


def _mean(rows: list[Mapping[str, float | None]]) -> float | None:
    values = [r["comprehensiveness_bins"] for r in rows if r["comprehensiveness_bins"] is not None]
    return sum(values) / len(values) if values else None


def lexicon_reference(folder: Path) -> str:
    """Self-explanations beside a human lexicon's valences read through the same probe (``evaluate --lexicon``):
    each run's shares of own occlusion and self - lexicon paired per sentence; then, for a setup measured with
    several draws of demos on the same sentences, those draws taken together (:func:`demo_draws`)."""
    header = ["model", "data", "program", "format", "n", "draws (demo seeds)", "self / occlusion",
              "lexicon / occlusion", "self - lexicon (paired)", "files"]

    def row(first: Mapping[str, Any], program: str, seeds: str, figures: Mapping[str, Any], files: str) -> list[str]:
        return [first["model"], _data(first), program, first["format"], str(first["n"]), seeds,
                _ci(figures, SHARE, 2), _ci(figures, LEXICON_SHARE, 2), _vs_baseline(figures, "lexicon"), files]

    # each setup's runs by sentence set and draw, the draws taken together after them
    keyed = [((r["model"], program, _data(r), r["n"], _seed(r)),
              row(r, _program(program, {**r, "demo_seed": 0}), str(_seed(r)) if r.get("demos") else "-", r,
                  f"`{stem}.json`"))
             for stem, program, r in _evaluations(folder) if _has_lexicon(r)]
    for (_, program, *_), sentences in _draws(folder).items():
        for runs in sentences.values():
            if len(runs) > 1 and all(_has_lexicon(r) for _, r in runs):
                first = runs[0][1]
                keyed.append(((first["model"], program, _data(first), first["n"], float("inf")),
                              row(first, _program(program, {**first, "demo_seed": 0}),
                                  ", ".join(str(_seed(r)) for _, r in runs) + ", taken together", _pooled(runs)[1],
                                  ", ".join(f"`{stem}.json`" for stem, _ in runs))))
    rows = [cells for _, cells in sorted(keyed, key=lambda item: item[0])]
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def _word_kind(token: str, lexicon_value: float, toward: int) -> str:
    """What a word is, for :func:`top_fifth`: ``rated`` (the lexicon rates it toward the label), ``function``
    (punctuation, a stop word of scikit-learn's English list or a clitic such as "n't"), or ``content``."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # a kept list, not ours; comes with lime

    word = token.lower()
    if toward * lexicon_value > 0:
        return "rated"
    if not any(c.isalnum() for c in word) or word in ENGLISH_STOP_WORDS or word.startswith("'") or word == "n't":
        return "function"
    return "content"


def top_fifth(folder: Path) -> str:
    """What each explanation ranks in a review's top fifth (ERASER's 20 % bin, corrected mode: toward the predicted
    label, ties by position) and how much each of those words moves the program's label alone (its own occlusion
    value toward the label, a mean over words), for runs that kept their word values (``evaluate --faithfulness
    --lexicon``): self's, the lexicon's and occlusion's top fifth, split by what the words are."""
    from metrics.faithfulness import bin_sizes, rank_positions
    from metrics.modes import CORRECTED

    header = ["model", "data", "program", "n", "top-fifth words", "occlusion a word: self's / lexicon's / "
              "occlusion's top", "lexicon-rated words in self's / lexicon's / occlusion's top",
              "occlusion a word: self's other words / lexicon's filler", "occlusion's top: punctuation and function "
              "words / unrated content words", "of those content words, in self's / lexicon's top", "probe reading",
              "file"]
    rows = []
    for stem, program, r in _evaluations(folder):
        # full explanations only: a top-k one gives an order of k words, not a value for every word
        kept = [e for e in r.get("examples", []) if e["label"] is not None and e.get("explanations")
                and all((e["explanations"].get(k) or {}).get("values") for k in ("self", "occlusion", "lexicon"))
                and "ranking" not in e["explanations"]["self"]]
        if not kept:
            continue
        words = 0
        occl: dict[str, list[float]] = {k: [] for k in ("self", "lexicon", "occlusion", "self_other", "filler")}
        rated = {"self": 0, "lexicon": 0, "occlusion": 0}
        occlusion_kinds = {"function": 0, "content": 0}
        found = {"self": 0, "lexicon": 0}
        for e in kept:
            predicted = LABELS.index(e["label"])
            toward = 1 if predicted else -1
            values = {k: e["explanations"][k]["values"] for k in ("self", "occlusion", "lexicon")}
            k = bin_sizes(len(e["tokens"]), (0.2,))[0]
            top = {kind: rank_positions(values[kind], predicted=predicted, mode=CORRECTED)[:k] for kind in values}
            kinds = [_word_kind(t, v, toward) for t, v in zip(e["tokens"], values["lexicon"], strict=True)]
            moved = [toward * v if v is not None else None for v in values["occlusion"]]
            words += k
            for kind, positions in top.items():
                occl[kind] += [moved[i] for i in positions if moved[i] is not None]
                rated[kind] += sum(kinds[i] == "rated" for i in positions)
            occl["self_other"] += [moved[i] for i in top["self"] if kinds[i] != "rated" and moved[i] is not None]
            occl["filler"] += [moved[i] for i in top["lexicon"] if kinds[i] != "rated" and moved[i] is not None]
            content = [i for i in top["occlusion"] if kinds[i] == "content"]
            occlusion_kinds["function"] += sum(kinds[i] == "function" for i in top["occlusion"])
            occlusion_kinds["content"] += len(content)
            found["self"] += sum(i in top["self"] for i in content)
            found["lexicon"] += sum(i in top["lexicon"] for i in content)

        mean = {kind: _num(sum(xs) / len(xs) if xs else None) for kind, xs in occl.items()}
        rows.append([r["model"], _data(r), _program(program, r), str(len(kept)), str(words),
                     f"{mean['self']} / {mean['lexicon']} / {mean['occlusion']}",
                     f"{rated['self']} / {rated['lexicon']} / {rated['occlusion']}",
                     f"{mean['self_other']} / {mean['filler']}",
                     f"{occlusion_kinds['function']} / {occlusion_kinds['content']}",
                     f"{found['self']} / {found['lexicon']}", r.get("probe_reading", "n/a"), f"`{stem}.json`"])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def decision_rules(folder: Path) -> str:
    """Accuracy and AUC under every decision rule (``evaluate --decision all``)."""
    header = ["model", "program", "format", "demos", "n", "batch accuracy [95 % CI]", "AUC", "contextual",
              "logprob", "s/review (median)", "file"]
    rows = []
    for stem, program, r in _evaluations(folder):
        rules = r.get("decisions")
        if not rules:
            continue
        batch = rules["batch"]
        rows.append([r["model"], _program(program, r), r["format"], str(r["demos"]), str(r["n"]),
                     f"{_num(batch['accuracy'])} "
                     f"[{_num(batch['accuracy_ci'][0], 2)}, {_num(batch['accuracy_ci'][1], 2)}]",
                     _num(batch["auc"]), _num(rules["contextual"].get("accuracy")),
                     _num(rules["logprob"].get("accuracy")), _num(r["seconds_per_example_median"], 2),
                     f"`{stem}.json`"])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def _batch_correct(row: Mapping[str, Any]) -> list[float | None]:
    """Per sentence, 1.0 if the batch rule (log-odds plus the batch's bias) is right, 0.0 if not, None where the
    log-odds are missing."""
    bias = row["decisions"]["batch"]["bias"]
    return [None if e["log_odds"] is None else float((e["log_odds"] + bias > 0) == (e["gold"] == 1))
            for e in row["examples"]]


def paired_programs(folder: Path) -> str:
    """Programs answered on the same sentences in one ``evaluate --decision all`` run, compared pair by pair
    under the batch rule: paired accuracy difference (bootstrap CI, permutation p) and McNemar's test."""
    header = ["model", "data", "n", "program A", "program B", "batch accuracy A", "batch accuracy B",
              "B - A [95 % CI], p", "McNemar p (A only / B only)", "AUC A", "AUC B", "file"]
    by_file: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for stem, program, r in _evaluations(folder):
        if r.get("examples") and r.get("decisions"):
            by_file.setdefault(stem, []).append((program, r))
    rows = []
    for stem, programs in by_file.items():
        for i, (name_a, a) in enumerate(programs):
            for name_b, b in programs[i + 1:]:
                if [e["id"] for e in a["examples"]] != [e["id"] for e in b["examples"]]:
                    raise ValueError(f"{stem}.json: {name_a} and {name_b} were answered on different sentences")
                d = paired_accuracy(_batch_correct(b), _batch_correct(a))
                rows.append([a["model"], _data(a), str(d["n"]), _program(name_a, a), _program(name_b, b),
                             _num(a["decisions"]["batch"]["accuracy"]), _num(b["decisions"]["batch"]["accuracy"]),
                             f"{_num(d['difference'])} [{_num(d['ci_low'])}, {_num(d['ci_high'])}], "
                             f"p {_num(d['p_value'])}",
                             f"{_num(d['mcnemar_p_value'])} ({d['only_b_correct']} / {d['only_a_correct']})",
                             _num(a["decisions"]["batch"]["auc"]), _num(b["decisions"]["batch"]["auc"]),
                             f"`{stem}.json`"])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def answer_formats(folder: Path) -> str:
    """The E-P answer-format ablation (``ep_answer_formats.py``): one row per answer style and value grid."""
    styles = {"P": "prediction only", "json": "JSON", "text": "plain text, `Label:`",
              "textS": "plain text, `Sentiment:`", "jsonR": "JSON, review restated before `label`",
              "textR": "plain text, review restated before `Sentiment:`"}
    grids = {"none": "-", "21": "21 numbers (-1.0 .. 1.0)", "5": "5 numbers", "polarity": "polarity words"}
    rows = []
    for path in sorted(folder.glob("ep_answer_formats_*.jsonl")):
        demos = re.search(r"(\d+)demos", path.stem)
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            source = DEMO_SOURCE_NAMES[r.get("demo_source", "occlusion")]
            rows.append([demos.group(1) if demos else "?", source, str(r["n"]), styles.get(r["style"], r["style"]),
                         grids.get(r["grid"], r["grid"]), _num(r["batch_accuracy"]), _num(r["auc"]),
                         _num(r["s_per_review"], 2), _num(r["answer_tokens"], 1)])
    header = ["demos", "demo source", "n", "answer", "explanation values", "batch accuracy", "AUC", "s/review (median)",
              "answer tokens"]
    return _markdown(header, rows) if rows else "_not measured yet_"


def throughput(folder: Path) -> str:
    """``selfx bench``: the probe's paths side by side, the study cold and cached, the API at concurrency."""
    header = ["model", "probe texts", "texts/s serial", "texts/s trie walk", "speed-up", "tokens/text serial",
              "tokens/text trie walk", "% of raw llama.cpp", "study cold (s)", "study cached (s)",
              "API texts/s at 1 / 4 (server)", "file"]
    rows = []
    for path in sorted(folder.glob("bench_*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        api = (f"{_num(r['api_texts_per_second_concurrency_1'], 1)} / "
               f"{_num(r['api_texts_per_second_concurrency_4'], 1)} ({r['api_server']})" if "api_speedup" in r else "-")
        rows.append([r["model"], str(r["probe_texts"]), _num(r["probe_texts_per_second_serial"], 1),
                     _num(r["probe_texts_per_second_batched"], 1), f"{r['probe_speedup']:.2f}x",
                     _num(r["tokens_per_text_serial"], 1), _num(r["tokens_per_text_batched"], 1),
                     f"{100 * r['probe_fraction_of_raw']:.0f} %",
                     f"{r['study_seconds_cold']:.0f} ({r['scale']})", _num(r["study_seconds_cached"], 1), api,
                     f"`{path.name}`"])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def injection(folder: Path) -> str:
    """``evaluate --data injected``: how often a hidden instruction changes the label."""
    header = ["model", "program", "n", "label flips", "flips to the injected label", "accuracy injected",
              "accuracy clean", "parse failures", "file"]
    rows = [[r["model"], PROGRAMS.get(program, program), str(r["n"]), _ci(r, "injection_flip_rate"),
             _ci(r, "injection_to_target_rate"), _num(r["accuracy"]), _num(r["clean_accuracy"]),
             _num(r["parse_failure_rate"]), f"`{stem}.json`"]
            for stem, program, r in _evaluations(folder) if "injection_flip_rate" in r]
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def scale_out(folder: Path) -> str:
    """``workers_speedup.py``: one worker against two, a probe-bound optimisation on this machine."""
    header = ["model", "cores", "workers", "trials", "trial phase (s)", "probe texts", "probe texts/s",
              "trials/min", "speed-up (texts/s)", "file"]
    rows = []
    for path in sorted(folder.glob("scaleout_*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        for key in ("one_worker", "two_workers"):
            w = r[key]
            rows.append([r["model"], str(r["cores"]), str(w["workers"]), str(w["trials"]),
                         _num(w["trial_phase_seconds"], 0), str(w["probe_texts"]), _num(w["probe_texts_per_second"], 2),
                         _num(w["trials_per_minute"], 2),
                         f"{r['speedup_probe_texts_per_second']:.2f}x" if key == "two_workers" else "1",
                         f"`{path.name}`"])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def _optimisations(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, result) of every ``selfx optimize --json`` file (``*_optimize.json``)."""
    return [(path.name, json.loads(path.read_text(encoding="utf-8")))
            for path in sorted(folder.glob("*_optimize.json"))]


def _variant(v: Mapping[str, Any]) -> list[str]:
    program = PROGRAMS.get(v["program"], v["program"]) + _label_over(Variant(**v).label_samples)
    return [program, v.get("format", "numeric"), str(v["demos"]),
            v["demo_source"] if v["demos"] else "-", v["decision"], v["optimizer"]]


def optimisation_trials(folder: Path) -> str:
    """Every trial of an optimisation: the variant Optuna proposed and its two dev objectives."""
    header = ["study", "trial", "program", "format", "demos", "demo source", "decision", "optimiser", "dev accuracy",
              "dev comprehensiveness (bins)", "outcome", "minutes"]
    rows = []
    for name, r in _optimisations(folder):
        front = {p["number"] for p in r["pareto"]}
        for t in r["trial_table"]:
            values = t["values"] or [None, None]
            outcome = ("Pareto front" if t["number"] in front else "" if t["state"] == "COMPLETE" else
                       f"same variant as trial {t['duplicate_of']}" if t.get("duplicate_of") is not None else
                       f"{t['state'].lower()}: {t.get('failure') or 'killed'}")
            rows.append([f"`{name}`", str(t["number"]), *(_variant(t["variant"]) if t["variant"] else ["?"] * 6),
                         _num(values[0]), _num(values[1]), outcome.replace("|", "/"),
                         _num(t["seconds"] / 60 if t["seconds"] is not None else None, 1)])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def optimisation_dimensions(folder: Path) -> str:
    """Each value of each searched dimension: how many trials used it, their mean and best dev objectives."""
    header = ["study", "dimension", "value", "trials", "mean dev accuracy", "best dev accuracy",
              "mean dev comprehensiveness", "best dev comprehensiveness"]
    rows = []
    for name, r in _optimisations(folder):
        # each trial's variant as the model reads it: a key a study predates takes the model's default
        done = [(t, Variant(**t["variant"])) for t in r["trial_table"] if t["state"] == "COMPLETE" and t["variant"]]
        # the later dimensions appear once a study searched them (studies before them keep their tables)
        later = (("explanation_samples",) if any(v.label_samples for _, v in done) else ()) + (
            ("demo_seed",) if any(v.demos and v.demo_seed for _, v in done) else ())
        for dimension in ("program", "format", "demos", "decision", "optimizer", *later):
            # a program credits only the dimensions it uses: a top-k program has no format, only E-P reads its
            # label over sampled explanations, a zero-shot program has no draw of demos
            used = [(t, v) for t, v in done if (dimension != "format" or v.program in ("PE", "EP"))
                    and (dimension != "explanation_samples" or explains_first(v.program))
                    and (dimension != "demo_seed" or v.demos)]
            for value in sorted({str(getattr(v, dimension)) for _, v in used}):
                group = [t["values"] for t, v in used if str(getattr(v, dimension)) == value]
                accuracy = [v[0] for v in group if abs(v[0]) != float("inf")]
                comp = [v[1] for v in group if abs(v[1]) != float("inf")]
                rows.append([f"`{name}`", dimension, PROGRAMS.get(value, value) if dimension == "program" else value,
                             str(len(group)), _num(sum(accuracy) / len(accuracy) if accuracy else None),
                             _num(max(accuracy, default=None)), _num(sum(comp) / len(comp) if comp else None),
                             _num(max(comp, default=None))])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


def optimisation_held_out(folder: Path) -> str:
    """The optimisation's best trials against the study's paper variant on held-out sentences, paired."""
    header = ["study", "candidate", "variant", "accuracy [95 % CI]", "comprehensiveness (bins) [95 % CI]",
              "self - random (paired) [95 % CI], p", "accuracy - paper [95 % CI], p (McNemar)",
              "comprehensiveness - paper [95 % CI], p", "wall time (min)"]
    rows = []
    for name, r in _optimisations(folder):
        for label, row in r["held_out"].items():
            def versus(key: str, row: Mapping[str, Any] = row) -> str:
                d = row.get(key)
                if not d or d.get("difference") is None:
                    return "-"
                mcnemar = f" ({_num(d['mcnemar_p_value'])})" if "mcnemar_p_value" in d else ""
                return (f"{d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], "
                        f"p {_num(d['p_value'])}{mcnemar}")
            rows.append([f"`{name}`", label, f"`{row['variant']}`", _ci(row, "accuracy"),
                         _ci(row, "comprehensiveness_bins"),
                         _vs_baseline(row), versus("vs_paper_accuracy"),
                         versus("vs_paper_comprehensiveness"),
                         _num(r["wall_seconds"] / 60 if r.get("wall_seconds") else None, 0)
                         if label == "paper" else ""])
    return _markdown(header, rows) if rows else "_not measured yet: run `docs/measurements/measure.sh`_"


TABLES: dict[str, Callable[[Path], str]] = {
    "optimisation-trials": optimisation_trials,
    "optimisation-dimensions": optimisation_dimensions,
    "optimisation-held-out": optimisation_held_out,
    "scale-out": scale_out,
    "self-explanations": self_explanations,
    "demo-draws": demo_draws,
    "chosen-draw": chosen_draw,
    "lexicon-reference": lexicon_reference,
    "top-fifth": top_fifth,
    "decision-rules": decision_rules,
    "paired-programs": paired_programs,
    "answer-formats": answer_formats,
    "throughput": throughput,
    "injection": injection,
}


def render(text: str, folder: Path = MEASUREMENTS) -> str:
    """``text`` with every table block rewritten from the measurements in ``folder``."""
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise ValueError(f"docs/findings.md names an unknown table {name!r}; known: {list(TABLES)}")
        return f"{match.group(1)}{TABLES[name](folder)}\n{match.group(4)}"
    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.findings", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/findings.md is not current")
    args = parser.parse_args(argv)
    current = FINDINGS.read_text(encoding="utf-8")
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("docs/findings.md is stale: run python -m experiments.findings", file=sys.stderr)
            return 1
        return 0
    FINDINGS.write_text(fresh, encoding="utf-8")
    print(f"wrote {FINDINGS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
