"""Teacher demos carry the probe's occlusion values; lexicon demos the words' rated sentiment."""

import pytest

from programs.demos import build_demos, lexicon_supports_label, make_demos, pick_examples
from programs.types import Example
from tests.conftest import require_shared
from tests.test_explainers import ToyProbe


def test_teacher_demos_carry_the_models_own_occlusion():
    examples = [Example("a", "good film , bad ending", 1)]
    demo = make_demos("PE", examples, source="occlusion", probe=ToyProbe())[0]
    # ToyProbe occlusion: good +0.1, bad -0.1, others 0; scaled so max |value| = 1
    assert demo.explanation == [["good", 1.0], ["film", 0.0], [",", 0.0], ["bad", -1.0], ["ending", 0.0]]
    assert demo.label == "positive" and set(demo.inputs().keys()) == {"review"}
    topk = make_demos("EP-topk", examples, source="occlusion", probe=ToyProbe())[0]
    assert topk.k == 1 and topk.top_words == ["good"]


def test_explaining_programs_refuse_label_only_demos():
    with pytest.raises(ValueError, match="occlusion"):
        make_demos("EP", [Example("a", "fine", 1)], source="label")


def test_demo_examples_are_balanced_and_seeded():
    require_shared("sst2", "train.jsonl")
    chosen = pick_examples(8, seed=1)
    assert sum(e.label for e in chosen) == 4 and all(len(e.tokens) <= 14 for e in chosen)
    assert [e.id for e in chosen] == [e.id for e in pick_examples(8, seed=1)]


def test_lexicon_demos_carry_the_words_rated_sentiment():
    # VADER rates "great" 3.1 and "dull" -1.7 (of -4 .. 4); "acting" and "film" are unrated
    review = [Example("a", "great acting , dull film", 1)]
    numeric = make_demos("PE", review, source="lexicon")[0]
    assert numeric.explanation == [["great", 0.8], ["acting", 0.0], [",", 0.0], ["dull", -0.4], ["film", 0.0]]
    polarity = make_demos("EP", review, source="lexicon", format="polarity")[0]
    assert [v for _, v in polarity.explanation] == ["positive", "neutral", "neutral", "negative", "neutral"]
    assert polarity.restated_review == "great acting , dull film" and polarity.label == "positive"
    # top-k: the strongest valences of either sign, most positive first; repeated words once
    topk = make_demos("PE-topk", [Example("b", "dull , dull and great , not bad at all", 0)], source="lexicon")[0]
    assert topk.k == 2 and topk.top_words == ["great", "bad"]


def test_lexicon_demo_reviews_have_a_word_for_their_label():
    # "great" (3.1) is marked positive, "dull" (-1.7) negative, "okay" (0.9) neutral; "listless" is unrated
    assert lexicon_supports_label(Example("a", "great acting , dull film", 1))
    assert lexicon_supports_label(Example("a", "great acting , dull film", 0))
    assert not lexicon_supports_label(Example("b", "great acting", 0))
    assert not lexicon_supports_label(Example("c", "an okay , listless film", 0))


def test_lexicon_demos_ask_no_model():
    require_shared("sst2", "train.jsonl")
    demos = build_demos("PE", 8, lm=None, source="lexicon", format="polarity")
    assert [d.review for d in demos] == [e.text for e in pick_examples(8, keep=lexicon_supports_label)]
    assert all(len(d.explanation) == len(d.review.split()) for d in demos)
    assert all(d.label in {v for _, v in d.explanation} for d in demos)
    # the unfiltered draw has reviews without such a word, and P's gold-label demos are not filtered
    assert not all(lexicon_supports_label(e) for e in pick_examples(8))
    assert [d.review for d in build_demos("P", 8, lm=None, source="lexicon")] == [e.text for e in pick_examples(8)]
