"""Metrics on small hand-checked cases, in both modes."""

import math

import numpy as np
import pytest

from metrics.accuracy import accuracy
from metrics.agreement import agreement, agreement_k, pairwise_rank_agreement
from metrics.calibration import brier_score, expected_calibration_error
from metrics.faithfulness import (
    Reply,
    comprehensiveness,
    decision_flip_fraction,
    decision_flip_mit,
    deletion_rank_correlation,
    eraser_bins,
    perturbation_plan,
    rank_positions,
    sufficiency,
)
from metrics.modes import COMPAT, CORRECTED
from metrics.stats import mcnemar, mean_ci, paired_difference


def r(label, conf):
    return Reply(label, conf, conf if label == 1 else 1 - conf)


FAILED = Reply(None, None, None)


def test_comprehensiveness_compat_reconverts_p0_in_its_loop():
    # negative prediction (0, 0.8): p~ alternates 0.2, 0.8; the empty text is assumed 0.5
    removed = [r(0, 0.6), r(1, 0.7), r(1, 0.9)]
    assert comprehensiveness(r(0, 0.8), removed, COMPAT) == pytest.approx((0.2 - 0.4 + 0.8 - 0.7 + 0.8 - 0.5) / 4)
    # a positive prediction is converted correctly
    assert comprehensiveness(r(1, 0.8), removed, COMPAT) == pytest.approx((0.8 - 0.4 + 0.8 - 0.7 + 0.8 - 0.5) / 4)


def test_comprehensiveness_corrected_is_class_aware_and_queries_the_empty_text():
    removed = [r(0, 0.6), r(1, 0.7), r(1, 0.9)]  # P(negative): 0.6, 0.3, 0.1
    assert comprehensiveness(r(0, 0.8), removed, CORRECTED) == pytest.approx((0.8 - 0.6 + 0.8 - 0.3 + 0.8 - 0.1) / 4)


def test_comprehensiveness_single_token_and_gpt4o_variant():
    assert comprehensiveness(r(0, 0.8), [r(1, 0.9)], COMPAT) == pytest.approx((0.8 - 0.5) / 2)  # the raw c0
    assert comprehensiveness(r(0, 0.8), [r(1, 0.9)], COMPAT.with_plus_half()) == pytest.approx(0.5 / 2)


def test_failures_are_the_study_default_in_compat_and_excluded_in_corrected():
    removed = [FAILED, r(1, 0.7)]
    assert comprehensiveness(r(1, 0.8), removed, COMPAT) == pytest.approx((0.8 - 0.5 + 0.8 - 0.5) / 3)
    assert comprehensiveness(r(1, 0.8), removed, CORRECTED) is None
    assert comprehensiveness(FAILED, removed, CORRECTED) is None
    assert comprehensiveness(r(1, 0.8), [None, r(1, 0.7)], COMPAT) is None  # never recorded: not computable


def test_sufficiency_both_modes():
    kept = [r(1, 0.6)]  # n = 2
    assert sufficiency(r(1, 0.9), kept, r(0, 0.9), COMPAT) == pytest.approx((0.4 + 0.3 + 0.0) / 3)
    # corrected: the empty text's real answer (P(pos) 0.1), signed drops
    assert sufficiency(r(1, 0.9), kept, r(0, 0.9), CORRECTED) == pytest.approx((0.8 + 0.3 + 0.0) / 3)


def test_eraser_bins_use_at_least_one_token():
    removed = [r(1, 0.6), r(0, 0.9)]
    kept = [r(1, 0.7)]
    comp, suff = eraser_bins(r(1, 0.9), removed, kept, CORRECTED)
    # n = 2: bins 1, 5, 10, 20 % -> 1 token; 50 % -> 1 token
    assert comp == pytest.approx(0.3) and suff == pytest.approx(0.2)


def test_decision_flip_criteria_differ_between_modes():
    assert decision_flip_mit(r(1, 0.5), r(1, 0.6), COMPAT) == 1.0  # P crosses 0.5 upward
    assert decision_flip_mit(r(1, 0.5), r(1, 0.6), CORRECTED) == 0.0  # the label did not change
    assert decision_flip_fraction(r(1, 0.9), [r(1, 0.8), r(0, 0.6), r(0, 0.5)], CORRECTED) == pytest.approx(2 / 4)
    assert decision_flip_fraction(r(1, 0.9), [r(1, 0.8)], COMPAT) == 1.0  # never flips: (n+1)/(n+1)


def test_rankdel_ties_and_constants():
    single = [r(1, 0.9), r(1, 0.9), r(1, 0.9)]
    rho, ties = deletion_rank_correlation(r(1, 0.9), single, [0.1, 0.5, 0.2], CORRECTED)
    assert rho is None and ties == pytest.approx(2 / 3)  # all deltas tied: no correlation, ties reported
    rho, _ = deletion_rank_correlation(r(1, 0.9), [r(1, 0.5), r(1, 0.8), r(1, 0.85)], [0.9, 0.2, 0.1], CORRECTED)
    assert rho == pytest.approx(1.0)
    rho, _ = deletion_rank_correlation(r(1, 0.9), single, [0.1, 0.5, 0.2], COMPAT, np.random.default_rng(0))
    assert rho is not None  # compat breaks the ties with noise, as the study did
    assert deletion_rank_correlation(r(1, 0.9), [r(1, 0.5)], [0.3], CORRECTED) == (None, 0.0)  # n = 1


def test_ranking_positive_first_vs_toward_the_predicted_class():
    values = [0.1, -0.9, 0.5, None]
    assert rank_positions(values, predicted=0, mode=CORRECTED) == [1, 0, 2, 3]
    assert rank_positions(values, predicted=1, mode=CORRECTED) == [2, 0, 1, 3]
    assert rank_positions(values, predicted=0, mode=COMPAT)[:2] == [2, 0]
    assert rank_positions([0.0, 0.0, 0.0], predicted=1, mode=CORRECTED) == [0, 1, 2]  # ties keep position order


def test_plan_for_repeated_tokens_uses_positions():
    plan = perturbation_plan(3, [2, 0, 1])
    assert plan["removed"][0] == ("delete", (2,)) and plan["kept"][-1] == ("keep", (0, 2))  # positions, sorted
    with pytest.raises(ValueError):
        perturbation_plan(3, [0, 0, 1])


def test_agreement_hand_cases():
    assert agreement_k(1) == 1 and agreement_k(10) == 2
    same = agreement([0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [5, 4, 3, 2, 1], [5, 4, 3, 2, 1], n=5)
    assert same["feature_agreement"] == same["rank_agreement"] == same["iou"] == same["pairwise_rank_agreement"] == 1
    zeros = agreement([0, 1], [0, 1], [0.0, 0.0], [0.0, 0.0], n=2)
    assert zeros["sign_agreement"] == 0.0 and zeros["rank_correlation"] is None
    # repeated words are distinct positions: "good" at 0 and 2
    swapped = agreement([0, 2, 1], [2, 0, 1], [0.9, 0.1, 0.8], [0.8, 0.1, 0.9], n=3)
    assert swapped["feature_agreement"] == 0.0 and swapped["iou"] == 0.0
    assert pairwise_rank_agreement([0, 1, 2, 3], [1, 0, 2, 3]) == pytest.approx(5 / 6)
    assert agreement([0], [0], None, None, n=1)["rank_correlation"] is None


def test_accuracy_calibration_and_statistics():
    assert accuracy([1, None, 0], [1, 1, 1]) == (0.5, 2)
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert brier_score([0.5, 0.5], [0, 1]) == 0.25
    estimate = mean_ci([0.1, 0.2, 0.3, None], seed=1)
    assert estimate.n == 3 and estimate.excluded == 1 and estimate.low <= 0.2 <= estimate.high
    assert mean_ci([0.1, 0.2, 0.3], seed=1) == mean_ci([0.1, 0.2, 0.3], seed=1)  # seeded
    assert mcnemar([True, True], [True, True])["p_value"] == 1.0
    paired = paired_difference([1.0, 1.1, 0.9, 1.0, 1.2, 0.8], [0.0, 0.1, -0.1, 0.0, 0.1, 0.0])
    assert paired["difference"] == pytest.approx(5.9 / 6) and paired["p_value"] < 0.05
    assert paired["ci_low"] <= paired["difference"] <= paired["ci_high"]
    null = paired_difference([0.1, 0.2, 0.3, 0.4], [0.2, 0.1, 0.4, 0.3])  # differences cancel out
    assert null["difference"] == pytest.approx(0.0) and null["p_value"] == pytest.approx(1.0)
    assert paired_difference([1.0], [0.0])["difference"] is None  # one pair: no test
    assert math.isclose(mean_ci([None]).excluded, 1)
