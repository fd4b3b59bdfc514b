"""Skeleton decoding on a toy 'model' whose next-token distribution is written by hand."""

import json
import math

import numpy as np
import pytest

from programs.slot_decoder import (
    DECODER_VERSION,
    SIGNED_GRID,
    DecodeOptions,
    Fixed,
    Reading,
    Slot,
    carry_expected,
    compile_schema,
    decode,
    greedy,
    option_logprobs,
    rewrite_expected,
)

VOCAB = list("0123456789.-\"") + ["pos", "neg", "{", "}", "[", "]", ", ", ": ", "x"]
INDEX = {t: i for i, t in enumerate(VOCAB)}


def tokenize(text):
    out, i = [], 0
    while i < len(text):
        for piece in sorted(VOCAB, key=len, reverse=True):
            if text.startswith(piece, i):
                out.append(INDEX[piece])
                i += len(piece)
                break
        else:
            out.append(INDEX["x"])
            i += 1
    return out


def toy_logits(preferences):
    """Logits that prefer, after any context, the tokens in `preferences` (token -> logit)."""
    def logits_at(context):
        logits = np.full(len(VOCAB), -5.0)
        for token, value in preferences.items():
            logits[INDEX[token]] = value
        return logits
    return logits_at


def test_option_probabilities_are_renormalised_over_allowed_options():
    logits_at = toy_logits({"pos": math.log(3.0), "neg": 0.0, "x": 10.0})
    options = [tokenize("pos"), tokenize("neg")]
    lp = option_logprobs(logits_at, [], options, [True, True])
    assert np.allclose(np.exp(lp), [0.75, 0.25])  # "x" is not allowed: it takes no mass
    lp = option_logprobs(logits_at, [], options, [False, True])
    assert np.isnan(lp[0]) and lp[1] == pytest.approx(0.0)


def test_expected_value_equals_its_arithmetic():
    logprobs = np.full(len(SIGNED_GRID), np.nan)
    logprobs[SIGNED_GRID.index("-0.5")] = math.log(0.2)
    logprobs[SIGNED_GRID.index("0.5")] = math.log(0.5)
    logprobs[SIGNED_GRID.index("1.0")] = math.log(0.3)
    reading = Reading("number", SIGNED_GRID, tuple(logprobs), SIGNED_GRID.index("0.5"))
    assert reading.expected == pytest.approx(0.2 * -0.5 + 0.5 * 0.5 + 0.3 * 1.0)


def test_number_slot_walks_digits_and_reads_a_distribution():
    # prefers "-" then "0" then "." then "7": the grid value -0.7
    logits_at = toy_logits({"-": 2.0, "0": 1.0, ".": 0.0, "7": 3.0, "1": -1.0})
    segments = compile_schema({"type": "number", "minimum": -1, "maximum": 1})
    text, readings = decode(segments, [], tokenize=tokenize, logits_at=logits_at, choose=greedy)
    assert text == "-0.7"
    p = np.exp(np.nan_to_num(readings[0].logprobs, nan=-np.inf))
    assert p.sum() == pytest.approx(1.0)
    assert -1.0 <= readings[0].expected <= 1.0


def test_object_skeleton_keeps_key_order_and_forces_fixed_text():
    schema = {"type": "object", "properties": {
        "explanation": {"type": "array", "prefixItems": [
            {"type": "array", "prefixItems": [{"const": "good"}, {"type": "number", "minimum": -1, "maximum": 1}]},
            {"type": "array", "prefixItems": [{"const": "good"}, {"type": "number", "minimum": -1, "maximum": 1}]}]},
        "label": {"enum": ["pos", "neg"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["explanation", "label", "confidence"]}
    segments = compile_schema(schema)
    text, readings = decode(segments, [], tokenize=tokenize, logits_at=toy_logits({"pos": 1.0, "1": 2.0}),
                            choose=greedy)
    answer = json.loads(text)
    assert list(answer) == ["explanation", "label", "confidence"]
    assert [pair[0] for pair in answer["explanation"]] == ["good", "good"]  # a repeated word keeps two positions
    assert [r.kind for r in readings] == ["number", "number", "enum", "number"]
    assert all(-1 <= pair[1] <= 1 for pair in answer["explanation"]) and 0 <= answer["confidence"] <= 1


def test_unique_word_slots_never_repeat_a_word():
    schema = {"type": "array", "items": {"enum": ["pos", "neg"]}, "minItems": 2, "maxItems": 2, "uniqueItems": True}
    text, _ = decode(compile_schema(schema), [], tokenize=tokenize, logits_at=toy_logits({"pos": 5.0}), choose=greedy)
    assert json.loads(text) == ["pos", "neg"]


@pytest.mark.parametrize("empty", [
    {"type": "array", "items": {"type": "string", "enum": []}, "minItems": 0, "maxItems": 0,
     "uniqueItems": True},
    {"type": "array", "prefixItems": []},
])
def test_an_empty_review_has_an_empty_explanation_not_a_grammar_fallback(empty):
    # the content-free input "" (contextual calibration) has no tokens: no words to rank, no values
    schema = {"type": "object", "properties": {"words": empty, "label": {"enum": ["pos", "neg"]}},
              "required": ["words", "label"]}
    text, readings = decode(compile_schema(schema), [], tokenize=tokenize, logits_at=toy_logits({"pos": 1.0}),
                            choose=greedy)
    assert json.loads(text) == {"words": [], "label": "pos"} and [r.kind for r in readings] == ["enum"]


def test_enum_bias_moves_the_decision_and_expected_mode_rewrites_numbers():
    options = DecodeOptions.from_metadata(DecodeOptions("expected", {"pos": 0.0, "neg": 2.0}).to_metadata())
    assert options.enum_bias == {"pos": 0.0, "neg": 2.0} and options.value_mode == "expected"
    label, polarity = Slot("enum", ("pos", "neg")), Slot("enum", ("neg", "neutral", "pos"))
    assert options.biased(label, np.log([0.6, 0.4])).tolist() == pytest.approx([math.log(0.6), math.log(0.4) + 2])
    assert options.biased(polarity, np.log([0.2, 0.3, 0.5])).tolist() == pytest.approx(np.log([0.2, 0.3, 0.5]).tolist())
    segments = [Fixed('"'), Slot("enum", ("pos", "neg"), closing='"'), Fixed(" "), Slot("number", ("0.0", "1.0"))]
    readings = [Reading("enum", ("pos", "neg"), (math.log(0.6), math.log(0.4)), 0),
                Reading("number", ("0.0", "1.0"), (math.log(0.25), math.log(0.75)), 1)]
    assert rewrite_expected(segments, readings) == '"pos" 0.750'
    with pytest.raises(ValueError, match="value_mode"):
        DecodeOptions.from_metadata({"value_mode": "argmax"})


@pytest.mark.parametrize("schema", [
    {"type": "string"},
    {"type": "number"},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
    {"type": "object", "properties": {"a": {"enum": ["x"]}}, "required": []},
    {"type": "array", "items": {"type": "number"}},
])
def test_schemas_outside_the_family_fall_back_to_the_grammar(schema):
    assert compile_schema(schema) is None


def test_expected_mode_continues_with_the_grid_value_nearest_the_reported_one():
    # grid mass 0.6 on "0.0" and 0.4 on "1.0": argmax 0.0, expected 0.4 -> the context carries "0.4"
    segments = [Slot("number", ("0.0", "0.4", "1.0"))]

    def readings_for(choose):
        def logits(context):
            values = np.full(len(VOCAB), -50.0)
            if len(context) == 0:
                values[INDEX["0"]], values[INDEX["1"]] = math.log(0.6), math.log(0.4)
            elif context == [INDEX["0"], INDEX["."]]:
                values[INDEX["0"]], values[INDEX["4"]] = 0.0, -50.0
            return values
        return decode(segments, [], tokenize=tokenize, logits_at=logits, choose=choose)

    text, readings = readings_for(greedy)
    assert text == "0.0" and readings[0].expected == pytest.approx(0.4, abs=1e-6)
    text, readings = readings_for(carry_expected(greedy))
    assert text == "0.4"  # what E-P's label would then be read after
    assert carry_expected(greedy)(Slot("enum", ("a", "b")), np.log([0.3, 0.7])) == 1  # other slots: unchanged


def test_decode_options_carry_the_decoder_version():
    assert DecodeOptions("sample").to_metadata()["decoder"] == DECODER_VERSION
