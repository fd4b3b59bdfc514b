"""Programs, readout, probes and replay, offline (scripted LM and recorded data)."""

import json
import math

import dspy
import pytest

from programs.lean_adapter import LeanAdapter, refine_schema
from programs.probe import ProgramProbe
from programs.probe_cache import ProbeCache
from programs.readout import align_full, align_topk, label_log_probs, to_answer, to_attribution
from programs.recorded_probe import RecordedProbe
from programs.self_explain import SentimentProgram
from programs.signatures import SIGNATURES
from programs.slot_decoder import Fixed, compile_schema
from tests.conftest import require_shared
from tests.scripted import scripted_lm


def run(program, lm, review):
    with dspy.context(lm=lm, adapter=LeanAdapter()):
        return program(review=review)


def test_ep_prompt_asks_for_the_explanation_before_the_label():
    ep = LeanAdapter().format(SIGNATURES["EP"], [], {"review": "good film"})[0]["content"]
    pe = LeanAdapter().format(SIGNATURES["PE"], [], {"review": "good film"})[0]["content"]
    assert ep.index('"explanation"') < ep.index('"label"')
    assert pe.index('"label"') < pe.index('"explanation"')
    assert ep.index("importance") < ep.index("classify")


def test_schema_skeleton_is_the_reviews_tokens_repeated_words_included():
    from programs.lean_adapter import output_schema

    refined = refine_schema(output_schema(SIGNATURES["EP"]), {"review": "good , very good"})
    items = refined["properties"]["explanation"]["prefixItems"]
    assert [item["prefixItems"][0]["const"] for item in items] == ["good", ",", "very", "good"]
    # E-P restates the review between explanation and label: fixed text, nothing decoded
    assert list(refined["properties"]) == ["explanation", "restated_review", "label", "confidence"]
    assert refined["properties"]["restated_review"] == {"const": "good , very good"}
    skeleton = compile_schema(refined)
    assert ']], "restated_review": "good , very good", "label": "' in [s.text for s in skeleton if isinstance(s, Fixed)]
    topk = refine_schema(output_schema(SIGNATURES["PE-topk"]), {"review": "good , very good", "k": 9})
    assert topk["properties"]["top_words"]["maxItems"] == 3  # no more than the distinct words


def test_a_failed_parse_is_counted_never_a_default():
    lm = scripted_lm(['{"label": "maybe", "confidence": 0.5}'])
    prediction = run(SentimentProgram("P"), lm, "fine")
    answer = to_answer(prediction)
    assert not answer.ok and answer.label is None and answer.p_positive == {}
    assert "maybe" in answer.raw


def test_a_confidence_outside_the_unit_interval_is_a_counted_failure():
    # an API model once answered confidence 3.0 and crashed a whole study; now it is one excluded answer
    answer = to_answer(dspy.Prediction(label="positive", confidence=3.0, failure=None))
    assert not answer.ok and answer.failure.startswith("range: confidence 3.0")


def test_api_answers_are_aligned_with_a_stated_policy():
    tokens = ["good", ",", "very", "good"]
    exact = align_full(tokens, [["good", 0.5], [",", 0.0], ["very", 0.2], ["good", 0.4]])
    assert exact.values == (0.5, 0.0, 0.2, 0.4) and exact.info["policy"] == "index"
    shuffled = align_full(tokens, [["very", 0.2], ["good", 0.5], ["good", 2.0]])
    assert shuffled.info["policy"] == "first-unused-match"
    assert shuffled.values == (0.5, None, 0.2, None)  # the 2.0 is a range violation, the "," is uncovered
    assert shuffled.info["range_violations"] == 1 and shuffled.coverage == 0.5
    topk = align_topk(tokens, ["good", "good", "bad"], 3)
    assert topk.ranking == (0, 3) and topk.coverage == pytest.approx(2 / 3)


def _api_tokens(*pieces):
    """An API-style logprobs stream: (token, {alternative: p}) pairs, or bare tokens without alternatives."""
    def entry(piece):
        if not isinstance(piece, tuple):
            return {"token": piece, "top_logprobs": []}
        token, alternatives = piece
        top = [{"token": t, "logprob": math.log(q)} for t, q in alternatives.items()]
        return {"token": token, "top_logprobs": top}
    return {"content": [entry(piece) for piece in pieces]}


def test_label_probabilities_from_api_top_logprobs():
    alternatives = {' "pos': 0.5, ' "neg': 0.3, ' "positive': 0.1, " maybe": 0.1}
    stream = _api_tokens('{"', "label", '":', (' "pos', alternatives), 'itive"', "}")
    lp = label_log_probs(stream)
    assert math.exp(lp["positive"]) == pytest.approx(0.6 / 0.9)
    missing = _api_tokens('{"label": "', ("positive", {"positive": 0.9}), '"}')
    assert label_log_probs(missing) is None
    no_key = _api_tokens(("positive", {"positive": 0.6, "negative": 0.4}))
    assert label_log_probs(no_key) is None
    chat = _api_tokens("[[ ## label ## ]]", "\n", ("neg", {"neg": 0.2, "pos": 0.8}), "ative")
    assert math.exp(label_log_probs(chat)["positive"]) == pytest.approx(0.8)


@pytest.mark.parametrize("adapter", [dspy.JSONAdapter(), LeanAdapter()])
@pytest.mark.parametrize(("name", "rest"), [("PE", "explanation"), ("PE-topk", "top_words")])
def test_an_api_probe_reads_a_label_first_program_only_through_its_label(adapter, name, rest):
    # the server stops at the next field's key (it is not echoed): what arrives is the answer up to it
    reply, expected = {"PE": ('{"label": "positive", "confidence": 0.7, ', ("positive", 0.7)),
                       "PE-topk": ('{\n  "label": "negative",\n  "confidence": 0.6,\n  ', ("negative", 0.6))}[name]
    lm = scripted_lm(lambda request: reply)
    probe = ProgramProbe(SentimentProgram(name), lm, adapter=adapter)
    assert probe.reading == "through-label" and probe.approximation is None
    answers = probe.answers(["a fine film", "dull"])
    assert [(a.label, a.confidence) for a in answers] == [expected] * 2
    assert [tuple(r.config.stop) for r in lm.engine.requests] == [(f'"{rest}"',)] * 2
    # the full answer is still the program's own: with its stated confidence, P and E-P, and any other adapter
    others = [("PE", {"mode": "same-program"}), ("P", {}), ("EP", {}), ("PE", {"adapter": dspy.ChatAdapter()})]
    for other, kwargs in others:
        assert ProgramProbe(SentimentProgram(other), lm, **({"adapter": adapter} | kwargs)).reading == "decoded"


def test_label_is_read_after_an_explanation_whose_words_look_like_labels():
    # E-P from an API: "n" (of "n't") and "pos" come before the label and must not be taken for it
    stream = _api_tokens('{"explanation": [["ca", 0.0], ["', ("n", {"n": 0.9, "p": 0.1}), '\'t", -0.6], ["',
                         ("pos", {"pos": 0.5, "neg": 0.5}), 'h", 0.1]], "label": "',
                         ("negative", {"negative": 0.75, "positive": 0.25}), '", "confidence": 0.8}')
    lp = label_log_probs(stream)
    assert math.exp(lp["negative"]) == pytest.approx(0.75)


def test_full_program_reads_explanation_and_both_probabilities():
    reply = json.dumps({"label": "positive", "confidence": 0.8, "explanation": [["great", 0.9], ["fun", 0.4]]})
    prediction = run(SentimentProgram("PE"), scripted_lm([reply]), "great fun")
    answer, attribution = to_answer(prediction), to_attribution(prediction, "great fun")
    assert answer.p_positive["stated"] == pytest.approx(0.8)
    assert attribution.values == (0.9, 0.4) and attribution.coverage == 1.0


def test_cache_answers_without_calling_the_model(tmp_path):
    def reply(request):
        return '{"label": "positive", "confidence": 0.7}'

    lm = scripted_lm(reply)
    cache = ProbeCache(tmp_path / "probe.sqlite")
    probe = ProgramProbe(SentimentProgram("P"), lm, mode="same-program", cache=cache)
    first = probe.answers(["a b", "a", "a b", ""])
    assert len(lm.engine.requests) == 3  # the duplicate "a b" was asked once
    again = ProgramProbe(SentimentProgram("P"), lm, mode="same-program", cache=ProbeCache(tmp_path / "probe.sqlite"))
    assert again.answers(["a b", "a", ""]) == [first[0], first[1], first[3]]
    assert len(lm.engine.requests) == 3 and again.stats.cache_hits == 3 and again.stats.model_calls == 0


def test_changed_demos_change_the_fingerprint(tmp_path):
    lm = scripted_lm(lambda request: '{"label": "negative", "confidence": 0.6}')
    program = SentimentProgram("P")
    before = ProgramProbe(program, lm).fingerprint
    program.predict.demos = [dspy.Example(review="x", label="positive", confidence=0.9)]
    assert ProgramProbe(program, lm).fingerprint != before


def test_recorded_probe_reproduces_recorded_answers_and_says_what_it_never_saw():
    require_shared("huang2023", "llama3", "perturbation_cache_pe.jsonl.gz")
    rows = [json.loads(line) for line in open(require_shared("huang2023", "llama3", "self_expl_pe.jsonl"))]
    sentences = [json.loads(line) for line in open(require_shared("huang2023", "sst_sentences.jsonl"))]
    probe = RecordedProbe("llama3", "P-E")
    answers = probe.answers([s["sentence"] for s in sentences])
    for answer, row in zip(answers, rows, strict=True):
        assert answer.label_int == row["repo_pred_label"] and answer.confidence == pytest.approx(row["repo_confidence"])
    assert probe.answers(["a sentence nobody recorded"]) == [None]  # not recorded: excluded, never filled in
    # "Hmm ." was recorded as (0, 0.5), the study's parse-failure default: corrected mode counts it as a failure
    assert probe.answers(["Hmm ."])[0].confidence == 0.5
    assert not RecordedProbe("llama3", "P-E", recorded_default_as_failure=True).answers(["Hmm ."])[0].ok


def test_api_reply_with_an_out_of_range_importance_counts_a_violation():
    """An API model's value of 2.0 is neither clipped nor kept: it is dropped and counted."""
    reply = '{"label": "positive", "confidence": 0.9, "explanation": [["good", 2.0], ["film", 0.1]]}'
    prediction = run(SentimentProgram("PE"), scripted_lm([reply]), "good film")
    attribution = to_attribution(prediction, "good film")
    assert to_answer(prediction).ok and attribution.values == (None, 0.1)
    assert attribution.info["range_violations"] == 1


def test_polarity_slot_expected_value_on_hand_made_logprobs():
    """Each word's importance is P(positive) - P(negative) at its slot (expected), or -1/0/1 as written (sample)."""
    import math

    from programs.readout import polarity_importances

    def slot(p_neg, p_neu, p_pos):
        return {"token": "neutral", "logprob": math.log(p_neu), "top_logprobs": [
            {"token": "negative", "logprob": math.log(p_neg)}, {"token": "neutral", "logprob": math.log(p_neu)},
            {"token": "positive", "logprob": math.log(p_pos)}]}

    label = {"token": "positive", "logprob": math.log(0.7), "top_logprobs": [
        {"token": "negative", "logprob": math.log(0.3)}, {"token": "positive", "logprob": math.log(0.7)}]}
    logprobs = {"content": [{"token": '{"label": "', "logprob": 0.0, "top_logprobs": []}, label,
                            slot(0.1, 0.2, 0.7), slot(0.6, 0.3, 0.1)]}
    pairs = [["good", "positive"], ["bad", "negative"]]
    expected = polarity_importances(pairs, logprobs, "expected")
    assert [v for _, v in expected] == pytest.approx([0.6, -0.5])  # the label slot is not a polarity slot
    assert [v for _, v in polarity_importances(pairs, logprobs, "sample")] == [1.0, -1.0]
    # readings that do not match the words one to one are not used: the written words decide
    assert [v for _, v in polarity_importances(pairs + [["film", "neutral"]], logprobs, "expected")] == [1, -1, 0]


def test_a_polarity_program_asks_for_polarity_words_and_refuses_a_numeric_save(tmp_path):
    from programs.lean_adapter import output_schema

    program = SentimentProgram("EP", format="polarity")
    schema = refine_schema(output_schema(program.predict.signature), {"review": "good film"})
    value = schema["properties"]["explanation"]["prefixItems"][0]["prefixItems"][1]
    assert value["enum"] == ["negative", "neutral", "positive"]
    assert "negative, neutral or positive" in program.predict.signature.instructions
    assert program.neutral_value == "neutral" and SentimentProgram("EP").neutral_value == 0.0
    program.save(str(tmp_path / "p.json"), save_program=False)
    with pytest.raises(ValueError, match="polarity"):
        SentimentProgram("EP").load(str(tmp_path / "p.json"))
    SentimentProgram("EP", format="polarity").load(str(tmp_path / "p.json"))


def test_an_e_p_program_saved_before_the_restated_review_loads_with_its_demos_whole(tmp_path):
    """Its demos get their review as the restatement: complete demos stay in the prompt (the lean adapter
    drops incomplete ones; DSPy's JSONAdapter would show "Not supplied" for a model to copy)."""
    program = SentimentProgram("EP", format="polarity")
    old = {"review": "a gem", "explanation": [["a", "neutral"], ["gem", "positive"]], "label": "positive",
           "confidence": 0.9}
    program.predict.demos = [dspy.Example(**old).with_inputs("review")]
    path = tmp_path / "old.json"
    program.save(str(path), save_program=False)
    assert "restated_review" not in json.loads(path.read_text(encoding="utf-8"))["predict"]["demos"][0]
    loaded = SentimentProgram("EP", format="polarity")
    loaded.load(str(path))
    messages = LeanAdapter().format(loaded.predict.signature, loaded.predict.demos, {"review": "dull"})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert json.loads(messages[2]["content"]) == {"explanation": old["explanation"], "restated_review": "a gem",
                                                  "label": "positive", "confidence": 0.9}


def test_a_combined_label_reading_rewrites_only_the_label_slot():
    """Self-consistency's mean log-odds replaces the label slot's alternatives; explanation slots stay as read."""
    import math

    from programs.readout import label_log_probs, polarity_importances, with_label_log_odds

    word = {"token": "positive", "logprob": math.log(0.7), "top_logprobs": [
        {"token": "negative", "logprob": math.log(0.1)}, {"token": "neutral", "logprob": math.log(0.2)},
        {"token": "positive", "logprob": math.log(0.7)}]}
    label = {"token": "negative", "logprob": math.log(0.6), "top_logprobs": [
        {"token": "negative", "logprob": math.log(0.6)}, {"token": "positive", "logprob": math.log(0.4)}]}
    logprobs = {"content": [{"token": '{"explanation": [["good", "', "logprob": 0.0, "top_logprobs": []}, word,
                            {"token": '"]], "label": "', "logprob": 0.0, "top_logprobs": []}, label]}
    combined = with_label_log_odds(logprobs, 2.0)
    lp = label_log_probs(combined)
    assert lp["positive"] - lp["negative"] == pytest.approx(2.0)
    assert math.exp(lp["positive"]) + math.exp(lp["negative"]) == pytest.approx(1.0)
    assert combined["content"][-1]["logprob"] == pytest.approx(lp["negative"])  # the written label's own reading
    assert polarity_importances([["good", "positive"]], combined, "expected") == [["good", pytest.approx(0.6)]]
    assert label_log_probs(logprobs)["positive"] == pytest.approx(math.log(0.4))  # the input is left as it was
    with pytest.raises(ValueError, match="label slot"):
        with_label_log_odds({"content": [{"token": "no label here", "logprob": 0.0}]}, 1.0)


def test_explanation_samples_belong_to_e_p_and_embedded_models():
    from experiments.evaluate import evaluate
    from programs.types import InputError

    with pytest.raises(ValueError, match="E-P program"):
        SentimentProgram("PE", explanation_samples=2)
    with pytest.raises(ValueError, match="E-P program"):
        SentimentProgram("EP", explanation_samples=-1)
    assert SentimentProgram("EP-topk", explanation_samples=2).explanation_samples == 2
    with pytest.raises(InputError, match="embedded model"):
        evaluate("EP", lm_spec="openai/gpt-4o-mini", explanation_samples=2)
