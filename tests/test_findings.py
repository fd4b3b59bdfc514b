"""docs/findings.md's tables are the measurements in docs/measurements/, rendered."""

import json

import pytest

from experiments.findings import FINDINGS, MEASUREMENTS, main, render


def test_findings_tables_are_current():
    assert render(FINDINGS.read_text(encoding="utf-8"), MEASUREMENTS) == FINDINGS.read_text(encoding="utf-8"), \
        "docs/findings.md is stale: run python -m experiments.findings"
    assert main(["--check"]) == 0


def test_a_new_measurement_changes_its_table_and_nothing_else(tmp_path):
    row = {"model": "m", "backend": "local", "data": "huang2023", "format": "polarity", "n": 3, "demos": 16,
           "accuracy": 0.5, "seconds_per_example_median": 1.25,
           "comprehensiveness_bins": 0.2, "comprehensiveness_bins_ci_low": 0.1, "comprehensiveness_bins_ci_high": 0.3,
           "random_comprehensiveness_bins": 0.05, "occlusion_comprehensiveness_bins": 0.4,
           "comprehensiveness_bins_vs_random": 0.15, "comprehensiveness_bins_vs_random_ci_low": 0.02,
           "comprehensiveness_bins_vs_random_ci_high": 0.28, "comprehensiveness_bins_vs_random_p_value": 0.01}
    (tmp_path / "x.json").write_text(json.dumps({"PE": row}))
    text = "intro\n<!-- table: self-explanations -->\nold\n<!-- end: self-explanations -->\nprose\n"
    fresh = render(text, tmp_path)
    assert fresh.startswith("intro\n<!-- table: self-explanations -->\n| model |") and fresh.endswith(
        "<!-- end: self-explanations -->\nprose\n")
    line = fresh.splitlines()[4]
    assert line.startswith("| m | the study's sentences | P-E | polarity | 3 | 0.500 | 0.200 [0.100, 0.300] "
                           "| 0.050 [n/a, n/a] | 0.400")
    assert "0.150 [0.020, 0.280], p 0.010" in line and "| 0.50 |" in line  # self / occlusion
    assert render(fresh, tmp_path) == fresh
    # a program whose demos' words came from the lexicon is named so; teacher demos (the default) are not
    (tmp_path / "y.json").write_text(json.dumps({"PE": {**row, "demo_source": "lexicon"}}))
    lines = render(text, tmp_path).splitlines()
    assert "| P-E | polarity |" in lines[4] and "| P-E, lexicon demos | polarity |" in lines[5]
    # another draw of demos is named by its seed; the default draw (seed 0) is not
    (tmp_path / "y.json").write_text(json.dumps({"PE": {**row, "demo_source": "lexicon", "demo_seed": 2}}))
    assert "| P-E, lexicon demos (draw 2) | polarity |" in render(text, tmp_path).splitlines()[5]
    # a number of demos other than the embedded default setup's (16) is named too
    (tmp_path / "y.json").write_text(json.dumps({"PE": {**row, "demo_source": "lexicon", "demos": 32}}))
    assert "| P-E, 32 lexicon demos | polarity |" in render(text, tmp_path).splitlines()[5]
    (tmp_path / "y.json").write_text(json.dumps({"PE": {**row, "demos": 8}}))
    assert "| P-E, 8 demos | polarity |" in render(text, tmp_path).splitlines()[5]
    # the share of occlusion with its paired CI where evaluate reported one
    share = {"comprehensiveness_bins_share_of_occlusion": 0.5, "comprehensiveness_bins_share_of_occlusion_ci_low": 0.4,
             "comprehensiveness_bins_share_of_occlusion_ci_high": 0.62}
    (tmp_path / "y.json").write_text(json.dumps({"PE": {**row, **share}}))
    assert "| 0.50 [0.40, 0.62] |" in render(text, tmp_path).splitlines()[5]


def test_an_optimisation_renders_its_trials_dimensions_and_held_out_comparison(tmp_path):
    variant = {"program": "PE", "format": "polarity", "demos": 8, "demo_source": "occlusion", "decision": "batch",
               "optimizer": "mipro"}
    result = {"wall_seconds": 5400, "pareto": [{"number": 1}],
              "trial_table": [{"number": 0, "state": "FAIL", "values": None,
                               "variant": {**variant, "program": "PE-topk"},
                               "failure": "AdapterParseError: Unterminated string", "seconds": 30.0},
                              {"number": 1, "state": "COMPLETE", "values": [0.8, 0.05], "variant": variant,
                               "seconds": 120.0},
                              {"number": 2, "state": "COMPLETE", "values": [0.6, 0.03],
                               "variant": {**variant, "program": "EP", "demos": 0}, "seconds": 60.0},
                              {"number": 3, "state": "PRUNED", "values": None, "variant": variant, "duplicate_of": 1,
                               "seconds": 0.1},
                              {"number": 4, "state": "COMPLETE", "values": [0.9, 0.07],
                               "variant": {**variant, "program": "PE-topk", "format": "numeric"}, "seconds": 60.0}],
              "held_out": {"paper": {"variant": "PE-0demos", "accuracy": 0.7, "accuracy_ci_low": 0.6,
                                     "accuracy_ci_high": 0.8},
                           "pareto#1": {"variant": "PE-polarity", "accuracy": 0.8, "accuracy_ci_low": 0.7,
                                        "accuracy_ci_high": 0.9, "comprehensiveness_bins": 0.05,
                                        "comprehensiveness_bins_vs_random": 0.01,
                                        "comprehensiveness_bins_vs_random_ci_low": -0.01,
                                        "comprehensiveness_bins_vs_random_ci_high": 0.03,
                                        "comprehensiveness_bins_vs_random_p_value": 0.3,
                                        "vs_paper_accuracy": {"difference": 0.1, "ci_low": 0.02, "ci_high": 0.18,
                                                              "p_value": 0.01, "mcnemar_p_value": 0.02},
                                        "vs_paper_comprehensiveness": {"difference": None}}}}
    (tmp_path / "s_optimize.json").write_text(json.dumps(result))
    text = "".join(f"<!-- table: {t} -->\n<!-- end: {t} -->\n"
                   for t in ("optimisation-trials", "optimisation-dimensions", "optimisation-held-out"))
    fresh = render(text, tmp_path)
    assert ("| 0 | P-E top-k | polarity | 8 | occlusion | batch | mipro | n/a | n/a "
            "| fail: AdapterParseError: Unterminated") in fresh
    assert ("| `s_optimize.json` | 1 | P-E | polarity | 8 | occlusion | batch | mipro | 0.800 | 0.050 "
            "| Pareto front | 2.0 |") in fresh
    assert "| `s_optimize.json` | 2 | E-P | polarity | 0 | - |" in fresh  # no demos: no demo source
    assert "| `s_optimize.json` | program | E-P | 1 | 0.600 |" in fresh
    assert "| 3 | P-E | polarity | 8 | occlusion | batch | mipro | n/a | n/a | same variant as trial 1 | 0.0 |" in fresh
    assert "| `s_optimize.json` | format | polarity | 2 | 0.700 | 0.800 | 0.040 | 0.050 |" in fresh
    assert "| format | numeric |" not in fresh  # the top-k trial has no format to credit
    assert "| paper | `PE-0demos` | 0.700 [0.600, 0.800] | n/a | n/a, p n/a | - | - | 90 |" in fresh
    assert "| 0.050 [n/a, n/a] | 0.010 [-0.010, 0.030], p 0.300 | +0.100" in fresh
    assert "+0.100 [+0.020, +0.180], p 0.010 (0.020) | - |" in fresh


def test_programs_answered_on_the_same_sentences_are_compared_pair_by_pair(tmp_path):
    def row(odds: list[float], auc: float) -> dict:
        gold = [1, 0] * 6
        bias = -sum(odds) / len(odds)
        accuracy = sum((o + bias > 0) == (g == 1) for o, g in zip(odds, gold, strict=True)) / len(odds)
        return {"model": "m", "data": "sst2", "format": "polarity", "n": 12, "demos": 16, "accuracy": accuracy,
                "seconds_per_example_median": 1.0,
                "decisions": {"batch": {"accuracy": accuracy, "accuracy_ci": [0, 1], "auc": auc, "bias": bias},
                              "contextual": {}, "logprob": {}},
                "examples": [{"id": str(i), "gold": g, "label": None, "log_odds": o}
                             for i, (g, o) in enumerate(zip(gold, odds, strict=True))]}
    right = [2.0, -2.0] * 6  # every sentence right under the batch rule
    wrong_four = [-2.0, 2.0] * 2 + [2.0, -2.0] * 4  # the first four wrong
    (tmp_path / "pair.json").write_text(json.dumps({"P": row(right, 1.0), "EP": row(wrong_four, 0.75)}))
    fresh = render("<!-- table: paired-programs -->\n<!-- end: paired-programs -->\n", tmp_path)
    line = fresh.splitlines()[3]
    assert line.startswith("| m | SST-2 validation | 12 | P | E-P | 1.000 | 0.667 | -0.333 [")
    assert "| 0.125 (4 / 0) | 1.000 | 0.750 | `pair.json` |" in line  # McNemar: 4 discordant pairs, A right in all
    (tmp_path / "pair.json").write_text(json.dumps({"P": row(right, 1.0), "EP": {**row(right, 1.0), "examples": []}}))
    assert "_not measured yet" in render("<!-- table: paired-programs -->\n<!-- end: paired-programs -->\n", tmp_path)


def test_an_optimisation_over_explanation_samples_credits_only_e_p_with_them(tmp_path):
    """Only E-P reads its label over sampled explanations: a P-E trial drawn with K > 0 is plain P-E, and the
    dimension appears once a study searched it (studies before it keep their tables)."""
    base = {"format": "polarity", "demos": 4, "demo_source": "occlusion", "decision": "batch", "optimizer": "none"}
    trials = [({"program": "EP", "explanation_samples": 4}, [0.85, 0.04]),
              ({"program": "EP", "explanation_samples": 0}, [0.80, 0.05]),
              ({"program": "PE", "explanation_samples": 4}, [0.90, 0.06])]
    result = {"wall_seconds": 60, "pareto": [], "held_out": {},
              "trial_table": [{"number": i, "state": "COMPLETE", "values": values, "variant": {**base, **v},
                               "seconds": 60.0} for i, (v, values) in enumerate(trials)]}
    (tmp_path / "s_optimize.json").write_text(json.dumps(result))
    text = "".join(f"<!-- table: {t} -->\n<!-- end: {t} -->\n"
                   for t in ("optimisation-trials", "optimisation-dimensions"))
    fresh = render(text, tmp_path)
    assert "| 0 | E-P, label over 4 sampled explanations | polarity |" in fresh
    assert "| 2 | P-E | polarity |" in fresh
    assert "| `s_optimize.json` | explanation_samples | 4 | 1 | 0.850 |" in fresh
    assert "| `s_optimize.json` | explanation_samples | 0 | 1 | 0.800 |" in fresh  # the P-E trial is not counted
    (tmp_path / "s_optimize.json").write_text(json.dumps({**result, "trial_table": result["trial_table"][1:2]}))
    assert "explanation_samples" not in render(text, tmp_path)


def test_an_optimisation_over_demo_draws_credits_only_programs_with_demos(tmp_path):
    base = {"program": "PE", "format": "polarity", "demo_source": "lexicon", "decision": "batch", "optimizer": "none"}
    trials = [({"demos": 16, "demo_seed": 1}, [0.85, 0.08]), ({"demos": 16, "demo_seed": 0}, [0.80, 0.06]),
              ({"demos": 0, "demo_seed": 1}, [0.70, 0.02])]
    result = {"wall_seconds": 60, "pareto": [], "held_out": {},
              "trial_table": [{"number": i, "state": "COMPLETE", "values": values, "variant": {**base, **v},
                               "seconds": 60.0} for i, (v, values) in enumerate(trials)]}
    (tmp_path / "s_optimize.json").write_text(json.dumps(result))
    text = "<!-- table: optimisation-dimensions -->\n<!-- end: optimisation-dimensions -->\n"
    fresh = render(text, tmp_path)
    assert "| `s_optimize.json` | demo_seed | 1 | 1 | 0.850 |" in fresh  # the zero-shot trial has no draw
    assert "| `s_optimize.json` | demo_seed | 0 | 1 | 0.800 |" in fresh
    (tmp_path / "s_optimize.json").write_text(json.dumps({**result, "trial_table": result["trial_table"][1:]}))
    assert "demo_seed" not in render(text, tmp_path)  # no trial with demos drew other than the seed's own


def test_draws_of_demos_are_pooled_sentence_by_sentence(tmp_path):
    def draw(seed, self_values, share):
        examples = [{"id": i, "self": {"comprehensiveness_bins": s}, "random": {"comprehensiveness_bins": 0.1},
                     "occlusion": {"comprehensiveness_bins": 0.4}} for i, s in enumerate(self_values)]
        row = {"model": "m", "data": "sst2", "format": "polarity", "n": 4, "demos": 16, "demo_source": "lexicon",
               "demo_seed": seed, "accuracy": 0.75, "comprehensiveness_bins": sum(self_values) / 4,
               "comprehensiveness_bins_share_of_occlusion": share, "examples": examples}
        (tmp_path / f"draw{seed}.json").write_text(json.dumps({"PE": row}))

    text = "<!-- table: demo-draws -->\n<!-- end: demo-draws -->\n"
    draw(0, [0.2, 0.3, 0.2, 0.1], 0.5)
    assert "_not measured yet" in render(text, tmp_path)  # one draw is not a comparison of draws
    draw(1, [0.1, 0.1, 0.2, 0.1], 0.31)
    line = render(text, tmp_path).splitlines()[3]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "P-E, lexicon demos" and cells[5] == "0, 1" and cells[7] == "0.50, 0.31"
    # each sentence averaged over the draws: self 0.1625, random 0.1, occlusion 0.4
    assert cells[8:11] == ["0.163", "0.100", "0.400"]
    assert cells[11].startswith("0.062 [") and cells[12].startswith("0.41 [")
    assert cells[13] == "`draw0.json`, `draw1.json`"
    (tmp_path / "again.json").write_text((tmp_path / "draw1.json").read_text())
    with pytest.raises(ValueError, match="the same draw measured twice"):
        render(text, tmp_path)


def test_the_draw_chosen_on_development_sentences_is_reported_where_it_was_held_out(tmp_path):
    def draw(name, seed, share, *, data="sst2", skip=0, n=2):
        examples = [{"id": i, "self": {"comprehensiveness_bins": share * 0.4},
                     "random": {"comprehensiveness_bins": 0.1}, "occlusion": {"comprehensiveness_bins": 0.4}}
                    for i in range(n)]
        row = {"model": "m", "data": data, "skip": skip, "format": "polarity", "n": n, "demos": 16,
               "demo_source": "lexicon", "demo_seed": seed, "accuracy": 0.5 + seed / 10,
               "comprehensiveness_bins": share * 0.4, "comprehensiveness_bins_share_of_occlusion": share,
               "comprehensiveness_bins_share_of_occlusion_ci_low": share - 0.1,
               "comprehensiveness_bins_share_of_occlusion_ci_high": share + 0.1, "examples": examples}
        (tmp_path / f"{name}.json").write_text(json.dumps({"PE": row}))

    text = "<!-- table: chosen-draw -->\n<!-- end: chosen-draw -->\n"
    draw("dev0", 0, 0.40, skip=200)
    draw("held0", 0, 0.45)
    assert "_not measured yet" in render(text, tmp_path)  # one draw on development sentences chooses nothing
    draw("dev1", 1, 0.55, skip=200)
    draw("dev2", 2, 0.55, skip=200)  # a tie goes to the lower seed
    draw("overlap1", 1, 0.9, skip=201, n=100)  # shares sentences with the development slice: never held out
    draw("huang1", 1, 0.60, data="huang2023")
    lines = render(text, tmp_path).splitlines()[3:-1]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert [c[6] for c in cells] == ["SST-2 validation", "the study's sentences"]
    first, second = cells
    assert first[3] == "SST-2 validation after the first 200, 2" and first[4] == "0: 0.40, 1: 0.55, 2: 0.55"
    assert first[5] == "1" and first[8:11] == ["not measured"] * 3  # draw 1 was not measured on the first 2
    assert first[11] == "n/a" and first[12] == "n/a"
    assert second[5] == "1" and second[8] == "0.600" and second[10] == "0.60 [0.50, 0.70]"
    assert second[12] == "`huang1.json`"
    draw("held1", 1, 0.35)
    first = [c.strip() for c in render(text, tmp_path).splitlines()[3].strip("|").split("|")]
    assert first[10] == "0.35 [0.25, 0.45]" and first[12] == "`held1.json`"
    assert first[11].endswith("(draws 0, 1)")  # every draw held out there, taken together


def test_the_lexicon_reference_pairs_each_draw_and_the_draws_taken_together(tmp_path):
    def draw(seed, self_values, lexicon_values):
        examples = [{"id": i, "self": {"comprehensiveness_bins": s}, "random": {"comprehensiveness_bins": 0.1},
                     "occlusion": {"comprehensiveness_bins": 0.4}, "lexicon": {"comprehensiveness_bins": x}}
                    for i, (s, x) in enumerate(zip(self_values, lexicon_values, strict=True))]
        row = {"model": "m", "data": "huang2023", "format": "polarity", "n": 4, "demos": 16, "demo_source": "lexicon",
               "demo_seed": seed, "accuracy": 0.75, "comprehensiveness_bins": sum(self_values) / 4,
               "comprehensiveness_bins_share_of_occlusion": sum(self_values) / 1.6,
               "lexicon_comprehensiveness_bins": sum(lexicon_values) / 4,
               "lexicon_comprehensiveness_bins_share_of_occlusion": sum(lexicon_values) / 1.6,
               "lexicon_comprehensiveness_bins_share_of_occlusion_ci_low": 0.1,
               "lexicon_comprehensiveness_bins_share_of_occlusion_ci_high": 0.9,
               "comprehensiveness_bins_vs_lexicon": (sum(self_values) - sum(lexicon_values)) / 4,
               "comprehensiveness_bins_vs_lexicon_p_value": 0.5, "examples": examples}
        (tmp_path / f"draw{seed}.json").write_text(json.dumps({"PE": row}))

    text = "<!-- table: lexicon-reference -->\n<!-- end: lexicon-reference -->\n"
    assert "_not measured yet" in render(text, tmp_path)
    draw(0, [0.2, 0.3, 0.2, 0.1], [0.2, 0.2, 0.2, 0.2])
    draw(3, [0.1, 0.1, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2])
    lines = render(text, tmp_path).splitlines()[3:-1]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert [c[5] for c in cells] == ["0", "3", "0, 3, taken together"]
    assert cells[0][2] == "P-E, lexicon demos" and cells[0][7] == "0.50 [0.10, 0.90]"
    assert cells[1][8] == "-0.050 [n/a, n/a], p 0.500" and cells[1][9] == "`draw3.json`"
    # each sentence averaged over the draws: self 0.175, lexicon 0.2, occlusion 0.4
    together = cells[2]
    assert together[6].startswith("0.44 [") and together[7].startswith("0.50 [")
    assert together[8].startswith("-0.025 [") and together[9] == "`draw0.json`, `draw3.json`"
    # a draw measured without the lexicon leaves the draws' pooled row out, not half-measured
    row = json.loads((tmp_path / "draw3.json").read_text())
    del row["PE"]["lexicon_comprehensiveness_bins"]
    (tmp_path / "draw3.json").write_text(json.dumps(row))
    assert [line.split("|")[6].strip() for line in render(text, tmp_path).splitlines()[3:-1]] == ["0"]


def test_the_top_fifth_of_each_explanation_is_split_by_what_its_words_are(tmp_path):
    def example(tokens, label, self_values, lexicon, occlusion):
        return {"id": len(tokens), "gold": 1, "label": label, "tokens": tokens,
                "explanations": {"self": {"values": self_values}, "lexicon": {"values": lexicon},
                                 "occlusion": {"values": occlusion}, "random": {"values": [0.0] * len(tokens)}}}

    examples = [  # one word in a top fifth of 4, two of 6; occlusion values are P(positive) drops
        example(["a", "great", "film", "."], "positive", [0, 0.2, 0.9, 0], [0, 0.775, 0, 0], [0.01, 0.3, 0.5, 0.4]),
        example(["dull", ",", "not", "fun", "at", "all"], "negative", [-0.9, 0, 0, -0.5, 0, 0],
                [-0.4, 0, 0, 0.5, 0, 0], [-0.2, 0.01, -0.3, 0.05, 0, 0]),
        {"id": 9, "gold": 0, "label": None, "tokens": ["x"], "explanations": None},  # a failed answer: left out
    ]
    row = {"model": "m", "backend": "local", "data": "huang2023", "format": "polarity", "n": 3, "accuracy": 1.0,
           "examples": examples}
    (tmp_path / "kept.json").write_text(json.dumps({"PE": row}))
    (tmp_path / "older.json").write_text(json.dumps({"PE": {**row, "examples": [{"id": 1, "label": "positive"}]}}))
    topk = [{**e, "explanations": {**e["explanations"], "self": {"values": [1.0, None, None, None], "ranking": [0]}}}
            for e in examples[:1]]
    (tmp_path / "topk.json").write_text(json.dumps({"PE-topk": {**row, "examples": topk}}))
    text = "<!-- table: top-fifth -->\n<!-- end: top-fifth -->\n"
    lines = render(text, tmp_path).splitlines()
    # a run without word values, or whose self-explanations are top-k orders, has no row
    assert len(lines) == 5 and lines[3].endswith("`kept.json` |")
    # self's top: film (0.5), dull (0.2), fun (-0.05 toward negative); the lexicon's: great (0.3), dull, then ","
    # by position (-0.01); occlusion's: film, not (0.3), dull. Rated toward the label: self's dull, the lexicon's
    # great and dull, occlusion's dull. "not" is a stop word; film a content word in self's top, not the lexicon's.
    assert "| 2 | 3 | 0.217 / 0.163 / 0.333 | 1 / 2 / 1 | 0.225 / -0.010 | 1 / 1 | 1 / 0 | n/a |" in lines[3]
