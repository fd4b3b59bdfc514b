"""The five programs and the probe on the real embedded model (a few sentences)."""

import json

import dspy
import pytest

from programs.lean_adapter import LeanAdapter
from programs.probe import ProgramProbe
from programs.probe_cache import ProbeCache
from programs.readout import to_answer, to_attribution
from programs.self_explain import SentimentProgram

pytestmark = pytest.mark.model

REVIEW = "good acting , good story , dull ending ."


def _raw(lm):
    output = lm.history[-1]["outputs"][0]
    return output["text"] if isinstance(output, dict) else output


@pytest.mark.parametrize("name,first_key", [("EP", "explanation"), ("PE", "label"),
                                             ("EP-topk", "top_words"), ("PE-topk", "label")])
def test_order_is_visible_in_the_raw_constrained_output(local_lm, name, first_key):
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        prediction = SentimentProgram(name)(review=REVIEW)
    raw = json.loads(_raw(local_lm))
    assert next(iter(raw)) == first_key
    assert prediction.failure is None
    kinds = [entry["token"] for entry in prediction.logprobs["content"]]
    label_slot = next(i for i, token in enumerate(kinds) if token in ("positive", "negative"))
    assert (label_slot > 0) == name.startswith("EP")  # E-P reads the label after the explanation


@pytest.mark.parametrize("name", ["EP", "EP-topk"])
def test_an_empty_review_still_gets_a_label(local_lm, name):
    # contextual calibration sends "" through every program: an empty explanation, then the label
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        prediction = SentimentProgram(name, value_mode="expected")(review="")
    assert prediction.failure is None and prediction.label in ("positive", "negative")
    assert list(getattr(prediction, "top_words" if name.endswith("topk") else "explanation")) == []


def test_an_unparseable_grammar_is_an_error_not_a_crash(engine):
    # llama.cpp would only parse it when sampling starts, and crash the process there
    with pytest.raises(ValueError, match="cannot parse the grammar"):
        engine._grammar({"type": "object", "properties": {"x": {"enum": []}}, "required": ["x"]})


def test_full_explanation_has_one_value_per_position_repeated_words_included(local_lm):
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        prediction = SentimentProgram("PE", value_mode="expected")(review=REVIEW)
    attribution = to_attribution(prediction, REVIEW)
    assert len(attribution.values) == len(REVIEW.split()) and attribution.coverage == 1.0
    assert [pair[0] for pair in prediction.explanation] == REVIEW.split()
    assert all(-1 <= v <= 1 for v in attribution.values)
    assert len(set(attribution.values)) > 1  # expected-value reading is graded


def test_probe_modes_and_cache_on_the_real_model(local_lm, tmp_path):
    cache = ProbeCache(tmp_path / "probe.sqlite")
    texts = [REVIEW, "good acting , good story .", REVIEW]
    logprob = ProgramProbe(SentimentProgram("PE"), local_lm, mode="logprob", cache=cache)
    answers = logprob.answers(texts)
    assert logprob.stats.model_calls == 2 and answers[0] == answers[2]
    assert 0 < answers[0].p_positive["logprob"] < 1
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        direct = to_answer(SentimentProgram("P")(review=REVIEW))
    assert direct.p_positive["logprob"] == pytest.approx(answers[0].p_positive["logprob"], abs=1e-4)
    calls_before = len(local_lm.history)
    again = ProgramProbe(SentimentProgram("PE"), local_lm, mode="logprob", cache=cache).answers(texts)
    assert again == answers and len(local_lm.history) == calls_before
    same = ProgramProbe(SentimentProgram("PE"), local_lm, mode="same-program", cache=cache).answers([REVIEW])
    assert same[0].ok and "stated" in same[0].p_positive


def test_the_decided_label_is_forced_and_the_explanation_follows_it(local_lm):
    program = SentimentProgram("PE", decision="batch")
    program.calibration = {"rule": "batch", "bias": -50.0, "n": 1, "batch": "test"}  # force "negative"
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        prediction = program(review="a wonderful , moving film .")
    raw = json.loads(_raw(local_lm))
    assert raw["label"] == prediction.label == "negative"
    assert list(raw) == ["label", "confidence", "explanation"]  # decoded after the forced label
    label_slot = prediction.logprobs["content"][0]
    assert label_slot["token"] == "negative"


def test_a_base_model_without_chat_template_gets_a_plain_prompt():
    from programs.lm import make_lm

    gemma = make_lm("local:gemma3-270m", cache=False)
    messages = LeanAdapter().format(SentimentProgram("P").predict.signature, [], {"review": REVIEW})
    prompt = gemma.engine.render(messages)
    assert "<start_of_turn>" not in prompt and prompt.endswith(REVIEW + "\n")
    with dspy.context(lm=gemma, adapter=LeanAdapter()):
        prediction = SentimentProgram("P")(review=REVIEW)
    assert prediction.failure is None and prediction.label in ("negative", "positive")
