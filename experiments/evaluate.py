"""``selfx evaluate``: run programs over a dataset and summarise accuracy, failures, coverage, cost, and
(on request) every decision rule side by side and the explanations' faithfulness.

A long evaluation can be split across processes, machines or days: ``--shard K/N`` runs the K-th of N
consecutive slices of the first ``n`` examples (calibrated on all ``n``: under the batch rule an E-P shard
decodes every sentence of the batch once for it; each sentence draws the random stream it draws in the whole
run), and ``selfx merge`` joins the N reports. Every figure of a row is computed from its examples' records and
totals by :func:`report_row`, for a run and a merge alike, so the merged report is the whole run's, but for
timings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from statistics import median
from typing import Any

import dspy

from experiments import progress
from experiments.measure import (
    OCCLUSION_PAIR,
    Explanation,
    agreement_rows,
    explain,
    explanation_record,
    explanation_summary,
    faithfulness_summary,
    occlusion_agreement,
    program_faithfulness,
)
from experiments.predict import Predictions, predict
from metrics.accuracy import accuracy
from metrics.calibration import decision_rules
from metrics.modes import CORRECTED
from metrics.robustness import injection_flips
from programs.data import injected_pairs, load_examples
from programs.demos import build_demos
from programs.lean_adapter import default_adapter
from programs.lm import check_value_mode, describe_lm, make_lm, parse_lm_spec
from programs.probe import ProgramProbe
from programs.probe_cache import ProbeCache
from programs.self_explain import (
    CONTENT_FREE,
    DECISIONS,
    PROGRAM_NAMES,
    SentimentProgram,
    explains_first,
    label_log_odds,
)
from programs.types import LABELS, Example, InputError


def resolve_programs(choice: str) -> list[str]:
    if choice == "all":
        return list(PROGRAM_NAMES)
    names = [c.strip() for c in choice.split(",")]
    unknown = [n for n in names if n not in PROGRAM_NAMES]
    if unknown:
        raise InputError(f"unknown program(s) {unknown}; choose from {list(PROGRAM_NAMES)} or all")
    return names


def shard_bounds(n: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    """The examples ``[start, stop)`` of shard K of N: consecutive slices of the first ``n``, as even as can be.

    >>> shard_bounds(10, None), shard_bounds(10, (1, 3)), shard_bounds(10, (3, 3))
    ((0, 10), (0, 3), (6, 10))
    """
    if shard is None:
        return 0, n
    index, count = shard
    if not 1 <= index <= count:
        raise InputError(f"--shard {index}/{count}: give K/N with 1 <= K <= N, e.g. --shard 2/4 for the second of "
                         "four")
    if count > n:
        raise InputError(f"--shard {index}/{count}: {count} shards of --n {n} examples would leave some empty; "
                         f"use at most {n} shards")
    return (index - 1) * n // count, index * n // count


def example_records(examples: Sequence[Example], ran: Predictions) -> list[dict[str, Any]]:
    """One record per example with everything the report's figures are computed from (:func:`report_row`), so
    runs and programs on the same sentences can be compared pair by pair and shards of a run merged."""
    return [{"id": e.id, "gold": e.label, "label": a.label, "log_odds": o, "seconds": seconds, "failure": a.failure,
             "raw": (a.raw or "")[:300] if not a.ok else None,
             "coverage": att.coverage if att is not None else None,
             "range_violations": att.info.get("range_violations", 0) if att is not None else 0,
             **explanation_record(att)}
            for e, a, att, o, seconds in zip(examples, ran.answers, ran.attributions, ran.odds, ran.durations,
                                             strict=True)]


def summarise(records: Sequence[dict[str, Any]], *, wall_seconds: float, tokens: int) -> dict[str, Any]:
    """Accuracy over parsed answers (failures counted, never scored), coverage, explanation quality, cost."""
    acc, scored = accuracy(_label_ints(r["label"] for r in records), [r["gold"] for r in records])
    failures = [r for r in records if r["failure"] is not None]
    coverage = [r["coverage"] for r in records if r["coverage"] is not None]
    summary: dict[str, Any] = {
        "n": len(records),
        "accuracy": acc,
        "n_scored": scored,
        "parse_failures": len(failures),
        "parse_failure_rate": len(failures) / len(records),
        "token_coverage": sum(coverage) / len(coverage) if coverage else None,
        "range_violations": sum(r["range_violations"] for r in records),
        "positive_share": sum(r["label"] == "positive" for r in records) / scored if scored else None,
        "wall_seconds": wall_seconds,
        "seconds_per_example": wall_seconds / len(records),
        "seconds_per_example_median": median(r["seconds"] for r in records),
        "tokens": tokens,
        "tokens_per_example": tokens / len(records),
        "failures": [{"reason": r["failure"], "raw": r["raw"]} for r in failures[:20]],
    }
    summary.update(explanation_summary(records))
    return summary


def _label_ints(labels: Iterable[str | None]) -> list[int | None]:
    """Record labels as the class indices ``accuracy`` compares with gold (None stays None: a failed answer)."""
    return [LABELS.index(label) if label is not None else None for label in labels]


# What a report row adds up over its examples rather than computing from their records: merged shards sum them.
TOTALS = ("wall_seconds", "tokens", "faithfulness_probe_calls", "faithfulness_cache_hits", "faithfulness_seconds")


def report_row(settings: dict[str, Any], records: Sequence[dict[str, Any]], totals: dict[str, Any], *,
               content_free_odds: Sequence[float] | None = None, seed: int = 0) -> dict[str, Any]:
    """One program's report from its settings, its examples' records and its totals: *the* way ``evaluate`` and
    ``merge`` make a row, so merged shards report what the whole run would have."""
    row = {**settings, **summarise(records, wall_seconds=totals["wall_seconds"], tokens=totals["tokens"])}
    if records and "clean_label" in records[0]:
        row.update(injection_flips([r["clean_label"] for r in records], [r["label"] for r in records],
                                   ["negative" if r["gold"] == 1 else "positive" for r in records], seed=seed))
        clean, _ = accuracy(_label_ints(r["clean_label"] for r in records), [r["gold"] for r in records])
        row["clean_accuracy"] = clean
    if records and "self" in records[0]:
        row.update(faithfulness_summary(records, seed=seed))
    elif records and OCCLUSION_PAIR in records[0]:
        row.update(occlusion_agreement([r[OCCLUSION_PAIR] for r in records], seed=seed))
    row.update({key: value for key, value in totals.items() if key not in ("wall_seconds", "tokens")})
    if content_free_odds is not None:
        row["content_free_odds"] = list(content_free_odds)
        row["decisions"] = decision_rules([r["log_odds"] for r in records], [r["label"] for r in records],
                                          [r["gold"] for r in records], content_free_odds)
    row["examples"] = list(records)
    return row


def evaluate(programs: str = "all", *, data: str = "sst2", n: int = 20, skip: int = 0, lm_spec: str = "local",
             api_base: str | None = None, value_mode: str = "sample", decision: str = "generated",
             demos: int = 0, demo_seed: int = 0, demo_source: str = "occlusion", explanation_samples: int = 0,
             with_occlusion: bool = False, faithfulness: bool = False, probe_mode: str = "logprob",
             format: str = "numeric", lime_samples_per_token: int = 0, lexicon: bool = False, concurrency: int = 4,
             shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """Run each program on ``n`` examples (the first, or those after the first ``skip``) and summarise;
    ``faithfulness`` / ``with_occlusion`` measure its explanations through its own probe (``probe_mode``), beside
    occlusion, random, (when ``lime_samples_per_token`` > 0) LIME and (``lexicon``) a human word lexicon's valences.
    ``shard=(K, N)``: only the K-th of N consecutive slices of those examples, calibrated on all ``n`` (``selfx
    merge`` joins the N reports into the whole run's). ``explanation_samples``: E-P programs read their label over
    that many sampled explanations (others ignore it)."""
    if explanation_samples < 0:
        raise InputError(f"--explanation-samples must be 0 or a positive number, got {explanation_samples}")
    if explanation_samples and parse_lm_spec(lm_spec, api_base).backend != "local":
        raise InputError("--explanation-samples needs an embedded model (--lm local...): an API's label cannot be "
                         "read after each sampled explanation here; leave it at 0")
    if skip < 0:
        raise InputError(f"--skip must be 0 or a positive number of sentences, got {skip}")
    if lexicon and not faithfulness:
        raise InputError("--lexicon is a reference explanation for --faithfulness: add --faithfulness")
    if lime_samples_per_token < 0:
        raise InputError(f"--lime-samples must be 0 (no LIME) or a positive number, got {lime_samples_per_token}")
    if decision not in (*DECISIONS, "all"):
        raise InputError(f"unknown decision rule {decision!r}; choose one of {[*DECISIONS, 'all']}")
    check_value_mode(lm_spec, api_base, value_mode)
    shard_bounds(n, shard)  # a bad --shard fails before anything is loaded
    # --data injected: the same reviews without their injection are answered too, to count flips
    pairs = injected_pairs(n=skip + n)[skip:] if data == "injected" else None
    examples = ([a for _, a in pairs] if pairs is not None
                else load_examples(data, split="validation", n=skip + n)[skip:])
    if not examples:
        raise InputError(f"--skip {skip} leaves no sentences of {data}: skip fewer than it has")
    clean = [c for c, _ in pairs] if pairs else None
    start, stop = shard_bounds(len(examples), shard)
    lm = make_lm(lm_spec, api_base=api_base, cache=False)
    adapter = default_adapter(lm)
    cache = ProbeCache()
    report: dict[str, Any] = {}
    for name in resolve_programs(programs):
        program = SentimentProgram(name, value_mode=value_mode, decision="generated" if decision == "all" else decision,
                                   format=format,
                                   explanation_samples=explanation_samples if explains_first(name) else 0)
        if demos:
            with dspy.context(lm=lm, adapter=adapter):
                program.predict.demos = build_demos(name, demos, lm=lm, source=demo_source, seed=demo_seed,
                                                    cache=cache, format=format)
        if program.decision in ("contextual", "batch"):
            with dspy.context(lm=lm, adapter=adapter):
                batch = clean or examples  # injected reviews do not get to move the calibration
                program.calibrate([e.text for e in batch], batch_name=f"{'sst2' if clean else data}:validation"
                                                                      f"[{skip or ''}:{skip + len(batch)}]",
                                  cache=cache)
        part = examples[start:stop]
        ran = predict(program, part, lm, progress=progress.enabled(), threads=concurrency)
        records = example_records(part, ran)
        totals: dict[str, Any] = {"wall_seconds": ran.seconds, "tokens": ran.tokens}
        if clean:
            before = predict(program, clean[start:stop], lm, progress=progress.enabled(), threads=concurrency)
            for record, answer in zip(records, before.answers, strict=True):
                record["clean_label"] = answer.label
        settings = {**describe_lm(lm), "data": data, "skip": skip, "decision": decision, "value_mode": value_mode,
                    "format": format, "demos": demos, "explanation_samples": program.explanation_samples,
                    "demo_source": (demo_source if name != "P" else "label") if demos else None,
                    "demo_seed": demo_seed if demos else None,
                    "answer_fields": list(program.predict.signature.output_fields)}
        if program.calibration:
            settings["calibration"] = program.calibration
        probe = ProgramProbe(program, lm, mode=probe_mode, cache=cache, adapter=adapter, concurrency=concurrency,
                             progress=progress.bar)
        if faithfulness and program.granularity is not None:
            explainers = ("occlusion", "random", *(("lime",) if lime_samples_per_token else ()),
                          *(("lexicon",) if lexicon else ()))
            measured, sentences, kinds = program_faithfulness(part, ran.attributions, probe, mode=CORRECTED,
                                                              explainers=explainers, first=start,
                                                              lime_samples_per_token=lime_samples_per_token)
            settings.update({**probe.describe(), "lime_samples_per_token": lime_samples_per_token,
                             "explainers": list(explainers)})
            totals.update({key: measured[key] for key in TOTALS if key in measured})
            for i, (record, sentence) in enumerate(zip(records, sentences, strict=True)):
                record.update(sentence)
                # every kind's word values beside its figures, so a reader can see what each one ranked first
                record["tokens"] = list(part[i].tokens)
                record["explanations"] = {kind: xs[i].as_record() if xs[i] is not None else None
                                          for kind, xs in kinds.items()}
        elif with_occlusion and program.granularity == "full":
            tokens = [list(e.tokens) for e in part]
            kinds = {"self": [Explanation.of(a) for a in ran.attributions],
                     **explain(("occlusion",), tokens, probe, mode=CORRECTED)}
            rows = agreement_rows(tokens, kinds, probe.answers([e.text for e in part]), mode=CORRECTED,
                                  pairs=[("self", "occlusion")])[OCCLUSION_PAIR]
            for record, agreement in zip(records, rows, strict=True):
                record[OCCLUSION_PAIR] = agreement
        free = None
        if decision == "all":
            with dspy.context(lm=lm, adapter=adapter):
                odds = [label_log_odds(program(review=t)) for t in CONTENT_FREE]
            free = [o for o in odds if o is not None]
        if shard is not None:
            settings["shard"] = {"index": shard[0], "count": shard[1], "start": start, "stop": stop,
                                 "of": len(examples)}
        report[name] = report_row(settings, records, totals, content_free_odds=free)
    return report


def merge(reports: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The whole run's report from the reports of its shards (``(name, report)`` pairs, any order): each
    program's records in example order, its totals summed, every figure recomputed by :func:`report_row`.

    The shards must be one run's: the same programs with the same settings (model, data, decision rule and
    calibration, format, demos, probe), shard 1 ... N of the same N, each once."""
    if not reports:
        raise InputError("selfx merge needs the JSON reports of a run's shards (selfx evaluate --shard K/N --json)")
    programs = list(reports[0][1])
    for name, report in reports:
        if not isinstance(report, dict) or not report or not all(isinstance(r, dict) and "examples" in r
                                                                    for r in report.values()):
            raise InputError(f"{name}: not a selfx evaluate report; pass the --json files of selfx evaluate --shard")
        if list(report) != programs:
            raise InputError(f"{name}: programs {list(report)}, but {reports[0][0]} has {programs}; merge the "
                             "shards of one run")
    merged: dict[str, Any] = {}
    for program in programs:
        shards = sorted(((name, report[program]) for name, report in reports), key=lambda s: _shard(*s)["index"])
        first_name, first = shards[0]
        count = _shard(first_name, first)["count"]
        indices = [_shard(name, row)["index"] for name, row in shards]
        if indices != list(range(1, count + 1)) or any(_shard(*shard)["count"] != count for shard in shards):
            raise InputError(f"{program}: shards {indices} of {count} given; pass each of shards 1 ... {count} "
                             "once")
        settings = _settings(first)
        for name, row in shards[1:]:
            other = _settings(row)
            differ = sorted(k for k in set(settings) | set(other) if settings.get(k) != other.get(k))
            if differ:
                raise InputError(f"{program}: {name} differs from {first_name} in {differ}; merge the shards of one "
                                 "run (the same command but for --shard)")
        records = [record for _, row in shards for record in row["examples"]]
        totals = {key: sum(row[key] for _, row in shards) for key in TOTALS if key in first}
        kept = {k: v for k, v in settings.items() if k not in ("shard", "content_free_odds")}
        merged[program] = report_row({**kept, "merged_shards": count}, records, totals,
                                     content_free_odds=first.get("content_free_odds"))
    return merged


def _shard(name: str, row: dict[str, Any]) -> dict[str, Any]:
    if "shard" not in row:
        raise InputError(f"{name}: a whole run, not a shard; merge the --json files of selfx evaluate --shard K/N")
    return row["shard"]


# The keys of a row that describe the run rather than summarise its examples.
SETTINGS = ("backend", "model", "api_base", "data", "skip", "decision", "value_mode", "format", "demos", "demo_source",
            "demo_seed", "explanation_samples", "answer_fields", "calibration", "probe_mode", "probe_program",
            "probe_reading", "probe_exact", "probe_fingerprint", "lime_samples_per_token", "explainers",
            "content_free_odds")


def _settings(row: dict[str, Any]) -> dict[str, Any]:
    """What must be equal across a run's shards; the shard's place is compared apart (index, start, stop)."""
    out = {key: row[key] for key in SETTINGS if key in row}
    if "shard" in row:
        out["shard"] = {"count": row["shard"]["count"], "of": row["shard"]["of"]}
    return out
