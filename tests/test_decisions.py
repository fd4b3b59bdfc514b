"""Decision rules and calibration arithmetic on hand-made log-probabilities."""

import math

import dspy
import pytest

from experiments.evaluate import decision_rules
from programs.lean_adapter import LeanAdapter
from programs.self_explain import SentimentProgram, label_log_odds
from tests.scripted import scripted_lm


def test_rules_side_by_side_from_one_pass():
    odds = [2.0, 1.0, -1.0, 0.5, None]
    generated = ["positive", "positive", "positive", "positive", None]
    rules = decision_rules(odds, generated, [1, 1, 0, 0, 1], content_free_odds=[1.0, 1.0, 1.0])
    assert rules["generated"]["accuracy"] == pytest.approx(0.5)
    assert rules["logprob"]["accuracy"] == pytest.approx(0.75)  # 2, 1, 0.5 > 0: one false positive
    assert rules["contextual"]["bias"] == pytest.approx(-1.0)
    assert rules["contextual"]["accuracy"] == pytest.approx(0.75)  # 1, 0, 0, 0 after the bias
    assert rules["batch"]["bias"] == pytest.approx(-0.625)
    assert rules["batch"]["accuracy"] == pytest.approx(1.0)
    assert rules["batch"]["auc"] == pytest.approx(1.0) and rules["batch"]["n_scored"] == 4


def test_odds_come_from_the_label_slot_and_calibration_is_stored():
    odds_by_text = {"N/A": 1.0, "": 3.0, "[MASK]": 2.0}

    def reply(request):
        return '{"label": "positive", "confidence": 0.9}'

    program = SentimentProgram("P", decision="contextual")
    with pytest.raises(ValueError, match="calibrate"):
        _ = program.label_bias
    lm = scripted_lm(reply)
    # a scripted API-style model reports logprobs through the prediction; emulate them per text
    original = program.predict.forward

    def with_logprobs(**kwargs):
        prediction = original(**kwargs)
        odds = odds_by_text.get(kwargs["review"], -4.0)
        p = 1 / (1 + math.exp(-odds))
        label = {"token": "positive", "top_logprobs": [{"token": "positive", "logprob": math.log(p)},
                                                       {"token": "negative", "logprob": math.log(1 - p)}]}
        prediction.logprobs = {"content": [{"token": '{"label": "', "top_logprobs": []}, label]}
        return prediction

    program.predict.forward = with_logprobs
    with dspy.context(lm=lm, adapter=LeanAdapter()):
        calibration = program.calibrate()
        assert calibration["bias"] == pytest.approx(-2.0) and calibration["rule"] == "contextual"
        decided = program(review="a review whose log-odds are -4")
    assert label_log_odds(decided) == pytest.approx(-4.0)
    assert decided.label == "negative" and decided.generated_label == "positive"  # decided, not as written
    state = program.dump_state()
    restored = SentimentProgram("P", decision="contextual").load_state(state)
    assert restored.calibration == calibration and restored.label_bias == pytest.approx(-2.0)
