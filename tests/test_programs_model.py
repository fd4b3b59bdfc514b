"""The five programs and the probe on the real embedded model (a few sentences)."""

import json

import dspy
import pytest

from programs.lean_adapter import LeanAdapter, output_schema, refine_schema
from programs.readout import label_log_probs, to_attribution
from programs.self_explain import SentimentProgram
from programs.slot_decoder import DecodeOptions, compile_schema

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
    tokens = [entry["token"] for entry in prediction.logprobs["content"]]
    label_slot = next(i for i, token in enumerate(tokens) if token in ("positive", "negative"))
    before = "".join(tokens[:label_slot])
    assert before.endswith('"label": "')
    assert (before != '{"label": "') == name.startswith("EP")  # E-P reads the label after the explanation


def test_label_words_in_a_top_k_explanation_are_not_read_as_the_label(smol_lm):
    # the top word is "negative" or "positive" and comes first: the reading must be the label slot's
    review = "negative positive ."
    program = SentimentProgram("EP-topk")
    with dspy.context(lm=smol_lm, adapter=LeanAdapter()):
        prediction = program(review=review)
    tokens = [entry["token"] for entry in prediction.logprobs["content"]]
    assert tokens[0] == '{"top_words": ["' and tokens[1] in ("negative", "positive")  # a label word first
    # the decoder's own readings, slot by slot: the enum slot is the label, the word slot is not
    inputs = program._inputs(review)
    skeleton = compile_schema(refine_schema(output_schema(program.predict.signature), inputs))
    prompt = smol_lm.engine.prompt_tokens(LeanAdapter().format(program.predict.signature, [], inputs))
    with smol_lm.engine._loaded().lock:
        _, readings, _ = smol_lm.engine._decode_skeleton(prompt, skeleton, 0.0, 0, DecodeOptions())
    word, label = (next(r for r in readings if r.kind == kind) for kind in ("word", "enum"))
    read = label_log_probs(prediction.logprobs)
    slot = dict(zip(label.options, label.logprobs, strict=True))
    slot_odds = slot["positive"] - slot["negative"]
    assert read["positive"] - read["negative"] == pytest.approx(slot_odds, abs=1e-4)
    as_word = dict(zip(word.options, word.logprobs, strict=True))
    assert abs((as_word["positive"] - as_word["negative"]) - (read["positive"] - read["negative"])) > 1e-2


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


def test_the_decided_label_is_forced_and_the_explanation_follows_it(local_lm):
    program = SentimentProgram("PE", decision="batch")
    program.calibration = {"rule": "batch", "bias": -50.0, "n": 1, "batch": "test"}  # force "negative"
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        prediction = program(review="a wonderful , moving film .")
    raw = json.loads(_raw(local_lm))
    assert raw["label"] == prediction.label == "negative"
    assert list(raw) == ["label", "confidence", "explanation"]  # decoded after the forced label
    first, label_slot = prediction.logprobs["content"][:2]
    assert first["token"] == '{"label": "' and label_slot["token"] == "negative"


def test_a_base_model_without_chat_template_gets_a_plain_prompt():
    from programs.lm import make_lm

    gemma = make_lm("local:gemma3-270m", cache=False)
    messages = LeanAdapter().format(SentimentProgram("P").predict.signature, [], {"review": REVIEW})
    prompt = gemma.engine.render(messages)
    assert "<start_of_turn>" not in prompt and prompt.endswith(REVIEW + "\n")
    with dspy.context(lm=gemma, adapter=LeanAdapter()):
        prediction = SentimentProgram("P")(review=REVIEW)
    assert prediction.failure is None and prediction.label in ("negative", "positive")


@pytest.mark.parametrize("name", ["PE", "EP"])
def test_polarity_explanations_are_decoded_word_by_word_and_read_as_expected_values(local_lm, name):
    program = SentimentProgram(name, value_mode="expected", format="polarity")
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        prediction = program(review=REVIEW)
    assert [pair[0] for pair in prediction.explanation] == REVIEW.split()
    assert {pair[1] for pair in prediction.explanation} <= {"negative", "neutral", "positive"}
    attribution = to_attribution(prediction, REVIEW)
    assert attribution.coverage == 1.0 and all(-1 <= v <= 1 for v in attribution.values)
    assert len(set(attribution.values)) > 2  # P(positive) - P(negative): graded, not just -1/0/1


def test_e_p_label_over_sampled_explanations_is_their_mean_and_follows_the_decision(local_lm):
    """Self-consistency: the label's log-odds are the mean over seeded sampled explanations (the same on every
    call), the greedy explanation is what is returned, and a label the mean decides against the greedy one is
    forced at the label slot."""
    import hashlib

    from programs.probe import program_fingerprint
    from programs.self_explain import label_log_odds

    review = "a wonderful , moving film with a dull ending ."
    greedy = SentimentProgram("EP", value_mode="expected", format="polarity")
    sampled = SentimentProgram("EP", value_mode="expected", format="polarity", explanation_samples=3)
    seed = int(hashlib.sha256(review.encode()).hexdigest()[:8], 16)
    config = {"logprobs": True, "top_logprobs": 20, "temperature": 1.0,
              "metadata": DecodeOptions("expected").to_metadata()}
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        first, again, plain = sampled(review=review), sampled(review=review), greedy(review=review)
        each = [label_log_odds(greedy.predict(review=review, config={**config, "seed": seed + j})) for j in range(3)]
        mean = sum(each) / 3
        assert label_log_odds(first) == pytest.approx(mean, abs=1e-6) == label_log_odds(again)
        assert label_log_odds(plain) != pytest.approx(mean, abs=1e-3)  # the samples were not the greedy answer
        assert first.explanation == plain.explanation
        assert program_fingerprint(sampled) != program_fingerprint(greedy)
        # a bias between the greedy reading and the mean: the greedy decode alone would write the other label
        bias = -(label_log_odds(plain) + mean) / 2
        for program in (greedy, sampled):
            program.decision = "batch"
            program.calibration = {"rule": "batch", "bias": bias, "n": 1, "batch": "test"}
        alone, flipped = greedy(review=review), sampled(review=review)
    assert flipped.label == ("positive" if mean + bias > 0 else "negative") != alone.label
    assert json.loads(_raw(local_lm))["label"] == flipped.label  # decoded again with the decided label forced
    assert label_log_odds(flipped) == pytest.approx(mean, abs=1e-6)
