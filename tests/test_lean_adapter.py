import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from programs.json_grammar import schema_from_response_format
from programs.lean_adapter import LeanAdapter, output_schema
from programs.signatures import Sentiment
from tests.scripted import ScriptedEngine


def test_prompt_is_short_and_demos_are_json_pairs():
    demo = {"review": "a gem", "label": "positive", "confidence": 0.9}
    messages = LeanAdapter().format(Sentiment, [demo], {"review": "dull"})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == '{"label": "positive", "confidence": 0.9}'
    assert messages[-1]["content"] == "dull"
    assert '"label": "negative" or "positive"' in messages[0]["content"]
    assert len(messages[0]["content"].split()) < 60


def test_schema_keeps_signature_order_and_bounds():
    schema = output_schema(Sentiment)
    assert list(schema["properties"]) == ["label", "confidence"]
    assert schema["properties"]["label"]["enum"] == ["negative", "positive"]
    assert (schema["properties"]["confidence"]["minimum"], schema["properties"]["confidence"]["maximum"]) == (0, 1)


def test_parse_validates_types_and_ranges():
    adapter = LeanAdapter()
    assert adapter.parse(Sentiment, '{"label": "negative", "confidence": 0.25}') == {
        "label": "negative", "confidence": 0.25}
    for bad in ['{"label": "neutral", "confidence": 0.5}', '{"label": "positive", "confidence": 2}',
                '{"label": "positive"', "positive"]:
        with pytest.raises(AdapterParseError):
            adapter.parse(Sentiment, bad)


def test_predict_round_trip_sends_the_schema_to_the_engine():
    engine = ScriptedEngine(['{"label": "positive", "confidence": 0.8}'])
    lm = dspy.LM("scripted/x", engine=engine, cache=False)
    with dspy.context(lm=lm, adapter=LeanAdapter()):
        prediction = dspy.Predict(Sentiment)(review="great")
    assert (prediction.label, prediction.confidence) == ("positive", 0.8)
    sent = engine.requests[0].config.response_format
    assert schema_from_response_format(sent)["properties"]["label"]["enum"] == ["negative", "positive"]
