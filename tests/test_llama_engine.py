"""The real embedded model, end to end (a few sentences; marked `model`)."""

import json
import math
import threading

import dspy
import pytest

from programs.lean_adapter import LeanAdapter
from programs.readout import label_log_probs
from programs.signatures import Sentiment

pytestmark = pytest.mark.model

REVIEWS = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés .",
           "an utterly incompetent conclusion ."]


def test_typed_round_trip_through_dspy_predict(local_lm):
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        predictions = [dspy.Predict(Sentiment)(review=r) for r in REVIEWS]
    for p in predictions:
        assert p.label in ("negative", "positive")
        assert 0.0 <= p.confidence <= 1.0
    raw = local_lm.history[-1]["outputs"][0]
    raw = raw["text"] if isinstance(raw, dict) else raw
    assert list(json.loads(raw)) == ["label", "confidence"]  # grammar kept the signature's order


def test_usage_is_reported(local_lm):
    local_lm("Say hi.", max_tokens=4)
    usage = local_lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 4


def test_max_tokens_and_stop_are_honoured(local_lm):
    text = local_lm("Count from 1 to 50, separated by spaces.", max_tokens=40)[0]
    assert len(local_lm.engine.tokenize_text(text)) <= 40
    stopped = local_lm("Count from 1 to 50, separated by spaces.", max_tokens=40, stop=["5"])[0]
    assert "5" not in stopped


def test_n_and_temperature_give_distinct_samples(local_lm):
    outputs = local_lm("Write one word.", n=4, temperature=1.5, max_tokens=8)
    assert len(outputs) == 4
    assert len(set(outputs)) > 1
    greedy = {local_lm("Write one word.", temperature=0.0, max_tokens=8)[0] for _ in range(2)}
    assert len(greedy) == 1


def test_label_readings_reusing_the_kv_cache_equal_a_fresh_evaluation(smol_lm):
    """The label slot read after another review with the same instructions (the prompt prefix reused from the
    KV cache) equals a reading from an empty cache: both labels, whatever their token counts."""
    engine = smol_lm.engine
    messages = LeanAdapter().format(Sentiment, [], {"review": REVIEWS[0]})
    engine.slot_logprobs(LeanAdapter().format(Sentiment, [], {"review": REVIEWS[1]}), '{"label": "',
                         ["negative", "positive"])
    reused = engine.slot_logprobs(messages, '{"label": "', ["negative", "positive"])
    engine._loaded().llm.reset()
    fresh = engine.slot_logprobs(messages, '{"label": "', ["negative", "positive"])
    for label in ("negative", "positive"):
        assert reused[label] == pytest.approx(fresh[label], abs=1e-4)
    assert all(s < 0 for s in reused.values())


def test_concurrent_calls_are_safe(local_lm):
    results, errors = [], []

    def work(review):
        try:
            with dspy.context(lm=local_lm, adapter=LeanAdapter()):
                results.append(dspy.Predict(Sentiment)(review=review).label)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in REVIEWS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3


def test_free_text_fields_use_the_llama_grammar(smol_lm):
    local_lm = smol_lm  # an instruct model: Gemma (base) can loop on free text until max_tokens
    class Summary(dspy.Signature):
        """Summarise the review in a few words and rate it."""

        review: str = dspy.InputField()
        summary: str = dspy.OutputField()
        rating: int = dspy.OutputField()

    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        prediction = dspy.Predict(Summary)(review=REVIEWS[0])
    assert isinstance(prediction.summary, str) and isinstance(prediction.rating, int)


def test_label_readings_arrive_in_prediction_logprobs(local_lm):
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        prediction = dspy.Predict(Sentiment)(review=REVIEWS[0], config={"logprobs": True, "top_logprobs": 20})
    content = prediction.logprobs["content"]
    # the entries spell the answer, fixed text included, so readers find the label by its place
    assert json.loads("".join(entry["token"] for entry in content)) == {"label": prediction.label,
                                                                        "confidence": prediction.confidence}
    assert content[0]["token"] == '{"label": "' and content[0]["top_logprobs"] == []
    label_entry = content[1]
    assert {t["token"] for t in label_entry["top_logprobs"]} == {"negative", "positive"}
    total = sum(math.exp(t["logprob"]) for t in label_entry["top_logprobs"])
    assert abs(total - 1.0) < 1e-6


def test_slot_logprobs_equal_the_decoders_reading(smol_lm):
    local_lm, engine = smol_lm, smol_lm.engine
    with dspy.context(lm=local_lm, adapter=LeanAdapter()):
        prediction = dspy.Predict(Sentiment)(review=REVIEWS[2], config={"logprobs": True, "top_logprobs": 20})
    read = label_log_probs(prediction.logprobs)
    messages = LeanAdapter().format(Sentiment, [], {"review": REVIEWS[2]})
    separate = engine.slot_logprobs(messages, '{"label": "', ["negative", "positive"])
    assert abs(read["positive"] - separate["positive"]) < 1e-4 and abs(read["negative"] - separate["negative"]) < 1e-4


def test_kv_reuse_on_gemma_stays_within_its_batch_split_drift(engine):
    messages = LeanAdapter().format(Sentiment, [], {"review": REVIEWS[0]})
    reused = engine.slot_logprobs(messages, '{"label": "', ["negative", "positive"])
    engine._loaded().llm.reset()
    fresh = engine.slot_logprobs(messages, '{"label": "', ["negative", "positive"])
    assert abs(reused["positive"] - fresh["positive"]) < 0.05


def test_weights_load_in_plain_buffers():
    """No repacked weights: the AMX buffer segfaults, and the repacked kernels make results depend on batch splits."""
    import llama_cpp.llama_cpp as bindings

    from programs.llama_engine import plain_weight_buffers

    plain_weight_buffers()
    plain_weight_buffers()  # idempotent: the defaults are wrapped once
    assert bindings.llama_model_default_params().use_extra_bufts is False
