"""The one measurement pipeline on a toy probe: rounds, exclusions, top-k protocols, agreement."""

import pytest

from experiments.measure import Explanation, explain, faithfulness_summary, measure, program_faithfulness
from metrics.faithfulness import plan
from metrics.modes import COMPAT, CORRECTED
from programs.perturb import perturb
from programs.types import Attribution, Example
from tests.test_explainers import ToyProbe

SENTENCES = [["good", "film", "bad", "ending"], ["a", "good", "good", "day"]]


class BatchProbe(ToyProbe):
    """Records each call's texts, so a test can see the rounds."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def answers(self, texts):
        self.calls.append(list(texts))
        return super().answers(texts)


class _Stats:
    model_calls = cache_hits = 0


def test_every_perturbation_of_every_sentence_and_kind_is_asked_in_one_round():
    probe = BatchProbe()
    kinds = {"self": [Explanation((0.9, 0.0, -0.9, 0.1)), Explanation((0.1, 0.5, 0.4, 0.0))],
             "random": [Explanation((0.3, -0.2, 0.1, 0.0)), Explanation((0.0, 0.1, 0.2, 0.3))]}
    measured = measure(SENTENCES, kinds, probe, mode=CORRECTED)
    assert len(probe.calls) == 2  # the originals, then everything else at once
    originals, rest = probe.calls
    assert originals == [" ".join(s) for s in SENTENCES]
    assert len(rest) == len(set(rest))  # each text once, however many explanations need it
    # every text each explanation's plan needs was in that round
    needed = set()
    for sentence, explanations in zip(SENTENCES, zip(*kinds.values(), strict=True), strict=True):
        for explanation in explanations:
            order = sorted(range(4), key=lambda i: -explanation.values[i])  # toward "positive": both are positive
            needed |= {perturb(sentence, *p) for p in plan(4, order, "all")}
    assert needed <= set(rest)
    assert measured.summary["self"]["comprehensiveness_n"] == 2


def test_comprehensiveness_by_hand():
    # "good film bad ending": P(pos) 0.5 (one good, one bad) -> predicted negative (p 0.5 is not > 0.5)
    probe = ToyProbe()
    sentence = ["good", "good", "film"]  # P(pos) = 0.7, predicted positive
    measured = measure([sentence], {"self": [Explanation((1.0, 0.5, 0.0))]}, probe, mode=CORRECTED,
                       protocol="bins", metrics=("comprehensiveness_bins",))
    # every bin removes 1 or 2 words: top-1 removes a "good" (0.6), top-2 both (0.5); bins 1,5,10,20 % -> 1, 50 % -> 2
    assert measured.rows["self"][0]["comprehensiveness_bins"] == pytest.approx((4 * 0.1 + 0.2) / 5)


def test_a_failed_explanation_is_excluded_and_counted_never_scored_by_position():
    measured = measure(SENTENCES, {"self": [None, Explanation((0.1, 0.5, 0.4, 0.0))]}, ToyProbe(), mode=CORRECTED)
    assert measured.rows["self"][0] == {}
    summary = measured.summary["self"]
    assert summary["comprehensiveness_n"] == 1 and summary["comprehensiveness_excluded"] == 1


def test_top_k_single_step_or_padded():
    topk = [Explanation((None,) * 4, (0,), topk=True), Explanation((None,) * 4, (1,), topk=True)]
    single = measure(SENTENCES, {"topk": topk}, ToyProbe(), mode=CORRECTED, topk="single-step").rows["topk"]
    assert single[0]["comprehensiveness"] is not None and single[0]["df_frac"] is None  # one step only
    padded = measure(SENTENCES, {"topk": topk}, ToyProbe(), mode=CORRECTED, topk="padded").rows["topk"]
    # the padded ranking is measured like a full one; the single step rides along under its own names
    assert padded[0]["df_frac"] is not None
    assert padded[0]["comprehensiveness_topk"] == pytest.approx(single[0]["comprehensiveness"])
    with pytest.raises(ValueError, match="top-k protocol"):
        measure(SENTENCES, {"topk": topk}, ToyProbe(), mode=CORRECTED, topk="sometimes")


def test_agreement_over_all_pairs_excludes_missing_explanations():
    kinds = {"self": [Explanation((0.9, 0.0, -0.9, 0.1)), None],
             "occlusion": [Explanation((0.1, 0.0, -0.1, 0.0)), Explanation((0.0, 0.1, 0.1, 0.0))],
             "random": [Explanation((0.3, -0.2, 0.1, 0.0)), Explanation((0.0, 0.1, 0.2, 0.3))]}
    measured = measure(SENTENCES, kinds, ToyProbe(), mode=CORRECTED, agreement="all")
    assert set(measured.agreement) == {"self~occlusion", "self~random", "occlusion~random"}
    assert measured.agreement["self~occlusion"]["feature_agreement_n"] == 1
    assert measured.agreement["self~occlusion"]["feature_agreement_excluded"] == 1


def test_explainers_texts_are_asked_in_one_round_before_they_explain():
    probe = BatchProbe()
    made = explain(("occlusion", "lime", "random"), SENTENCES, probe, mode=COMPAT, lime_samples_per_token=2)
    first = probe.calls[0]
    assert all(set(call) <= set(first) for call in probe.calls[1:])  # later calls only re-read answers
    assert set(made) == {"occlusion", "lime", "random"} and all(len(v) == 2 for v in made.values())


def test_program_faithfulness_reports_self_beside_its_baselines():
    probe = ToyProbe()
    probe.stats = _Stats()
    examples = [Example(str(i), " ".join(s), 1) for i, s in enumerate(SENTENCES)]
    attributions = [Attribution((0.9, 0.0, -0.9, 0.1), "self"), None]
    out, rows, _ = program_faithfulness(examples, attributions, probe, mode=CORRECTED)
    for key in ("comprehensiveness_bins", "occlusion_comprehensiveness_bins", "random_comprehensiveness_bins",
                "spearman_vs_occlusion", "agreement_occlusion_feature_agreement", "explanation_nondegenerate_rate"):
        assert key in out, key
    assert out["comprehensiveness_bins_n"] == 1 and rows[1]["self"] == {}


def test_self_is_compared_with_random_and_occlusion_on_the_same_sentences():
    probe = ToyProbe()
    probe.stats = _Stats()
    sentences = [["good", "good", "film", "bad"], ["bad", "dull", "good", "day"], ["good", "fun", "good", "cast"]]
    examples = [Example(str(i), " ".join(s), 1) for i, s in enumerate(sentences)]
    # a faithful self-explanation: it ranks the words the toy model reacts to first
    attributions = [Attribution(tuple(0.9 if w == "good" else -0.9 if w == "bad" else 0.0 for w in s), "self")
                    for s in sentences]
    out, _, _ = program_faithfulness(examples, attributions, probe, mode=CORRECTED)
    for baseline in ("random", "occlusion"):
        key = f"comprehensiveness_bins_vs_{baseline}"
        assert {key, f"{key}_ci_low", f"{key}_ci_high", f"{key}_p_value"} <= set(out)
        assert out[f"{key}_n"] == 3
        assert out[key] == pytest.approx(out["comprehensiveness_bins"] - out[f"{baseline}_comprehensiveness_bins"])
    assert out["comprehensiveness_bins_vs_random"] > 0
    share = "comprehensiveness_bins_share_of_occlusion"
    assert out[share] == pytest.approx(out["comprehensiveness_bins"] / out["occlusion_comprehensiveness_bins"])
    assert out[f"{share}_ci_low"] <= out[share] <= out[f"{share}_ci_high"] and out[f"{share}_n"] == 3


def test_self_is_paired_against_the_lexicon_and_the_lexicon_gets_its_share_of_occlusion():
    probe = ToyProbe()
    probe.stats = _Stats()
    sentences = [["good", "good", "film", "bad"], ["bad", "dull", "good", "day"], ["good", "fun", "good", "cast"]]
    examples = [Example(str(i), " ".join(s), 1) for i, s in enumerate(sentences)]
    # the self-explanation ranks "film", "day" and "cast" (unrated, untouched by the toy model) first
    attributions = [Attribution(tuple(0.9 if w in ("film", "day", "cast") else 0.0 for w in s), "self")
                    for s in sentences]
    out, rows, kinds = program_faithfulness(examples, attributions, probe, mode=CORRECTED,
                                            explainers=("occlusion", "random", "lexicon"))
    assert kinds["lexicon"][0].values == pytest.approx((0.475, 0.475, 0.0, -0.625))
    key = "comprehensiveness_bins_vs_lexicon"
    assert out[key] == pytest.approx(out["comprehensiveness_bins"] - out["lexicon_comprehensiveness_bins"])
    assert out[key] < 0 and out[f"{key}_n"] == 3 and {f"{key}_ci_low", f"{key}_p_value"} <= set(out)
    share = "lexicon_comprehensiveness_bins_share_of_occlusion"
    assert out[share] == pytest.approx(out["lexicon_comprehensiveness_bins"] / out["occlusion_comprehensiveness_bins"])
    assert out[f"{share}_ci_low"] <= out[share] <= out[f"{share}_ci_high"]
    assert all("lexicon" in row for row in rows)
    assert faithfulness_summary(rows) == {k: v for k, v in out.items() if not k.startswith("faithfulness_")}


def test_shards_of_a_run_give_the_whole_runs_faithfulness():
    # top-k explanations are padded to a full order from the sentence's random stream, so that stream must be the
    # one the sentence draws in the whole run
    sentences = [["good", "film", "bad", "plot", "cast"], ["a", "good", "good", "day", "out"],
                 ["bad", "bad", "dull", "film", "good"], ["the", "good", "cast", "was", "fine"],
                 ["good", "good", "good", "bad", "end"]]
    examples = [Example(str(i), " ".join(s), 1) for i, s in enumerate(sentences)]
    attributions = [Attribution((0.5, 0.0, 0.0, 0.5, 0.0), "self"), None, Attribution((None,) * 5, "topk", (4,)),
                    Attribution((0.0, 0.9, 0.0, 0.0, -0.3), "self"), Attribution((None,) * 5, "topk", (0, 3))]

    def run(start, stop):
        probe = ToyProbe()
        probe.stats = _Stats()
        return program_faithfulness(examples[start:stop], attributions[start:stop], probe, mode=CORRECTED,
                                    explainers=("occlusion", "random", "lime"), lime_samples_per_token=2, first=start)

    whole, records, _ = run(0, 5)
    parts = [run(0, 2)[1], run(2, 5)[1]]
    assert parts[0] + parts[1] == records
    cost = ("faithfulness_probe_calls", "faithfulness_cache_hits", "faithfulness_seconds")
    assert faithfulness_summary(parts[0] + parts[1]) == {k: v for k, v in whole.items() if k not in cost}
    # the offset matters: without it, a shard's top-k explanations would be padded from other sentences' streams
    probe = ToyProbe()
    probe.stats = _Stats()
    unshifted = program_faithfulness(examples[2:5], attributions[2:5], probe, mode=CORRECTED, explainers=())[1]
    assert [r["self"] for r in unshifted] != [r["self"] for r in records[2:5]]
