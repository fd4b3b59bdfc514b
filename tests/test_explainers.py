"""Explainers on a toy probe whose attributions can be worked out by hand."""

import pytest

from programs.explainers import EXPLAINERS, explainer
from programs.types import Answer, stated_p_positive


class ToyProbe:
    """P(positive) = 0.5 + 0.1 * (#"good" - #"bad"), clipped; counts the texts it is asked."""

    fingerprint = "toy"
    p_source = "stated"

    def __init__(self):
        self.asked = []

    def answers(self, texts):
        self.asked.extend(texts)
        out = []
        for text in texts:
            words = text.split()
            p = min(0.95, max(0.05, 0.5 + 0.1 * (words.count("good") - words.count("bad"))))
            label = "positive" if p > 0.5 else "negative"
            conf = p if label == "positive" else 1 - p
            out.append(Answer(label=label, confidence=conf, p_positive={"stated": stated_p_positive(label, conf)}))
        return out


def test_occlusion_by_hand():
    probe = ToyProbe()
    attribution = explainer("occlusion").explain(["good", "film", "good"], probe)
    assert attribution.values == pytest.approx((0.1, 0.0, 0.1))
    assert len(probe.asked) == 4 and attribution.info["texts"] == 4


def test_lime_corrected_weights_every_position_toward_the_truth():
    probe = ToyProbe()
    attribution = explainer("lime", seed=3).explain(["good", "dull", "bad", "good", "."], probe)
    values = attribution.values
    assert len(values) == 5 and all(v is not None for v in values)
    assert values[0] > 0 and values[3] > 0 and values[2] < 0  # repeated "good" gets two positions
    assert abs(values[1]) < abs(values[0]) and attribution.info["num_samples"] == 50
    assert not any("UNKWORDZ" in t for t in probe.asked)  # deletion, the same perturbation as occlusion
    again = explainer("lime", seed=3).explain(["good", "dull", "bad", "good", "."], ToyProbe())
    assert again.values == values  # fixed random_state


def test_lime_compat_masks_with_unkwordz_and_cannot_weight_punctuation():
    probe = ToyProbe()
    attribution = explainer("lime", compat=True, seed=0).explain(["good", "film", "."], probe)
    assert any("UNKWORDZ" in t for t in probe.asked)
    assert abs(attribution.values[2]) <= 0.001  # "." is not a LIME word: filler noise only


@pytest.mark.parametrize("name,options", [("occlusion", {}), ("lime", {"seed": 3}), ("lime", {"compat": True}),
                                          ("random", {}), ("lexicon", {})])
def test_texts_are_exactly_what_explain_asks(name, options):
    """The pipeline asks an explainer's texts before it explains: LIME's recording pass must see its real samples."""
    tokens = ["good", "dull", "bad", "good", "."]
    probe = ToyProbe()
    explainer(name, **options).explain(tokens, probe)
    assert explainer(name, **options).texts(tokens) == probe.asked


def test_random_baseline_is_seeded_per_sentence():
    a = explainer("random", seed=1).explain(["a", "b", "c"])
    assert a.values == explainer("random", seed=1).explain(["a", "b", "c"]).values
    assert a.values != explainer("random", seed=2).explain(["a", "b", "c"]).values
    assert all(-1 <= v <= 1 for v in a.values)


def test_unknown_explainer_lists_the_valid_ones():
    with pytest.raises(ValueError, match="occlusion"):
        explainer("shap")
    assert set(EXPLAINERS) == {"occlusion", "lime", "lexicon", "random"}


def test_lexicon_gives_each_word_its_rated_valence_scaled_to_one_and_asks_nothing():
    probe = ToyProbe()
    # VADER rates "great" 3.1 and "dull" -1.7 of -4 .. 4, "film" not at all; the study's sentences keep capitals
    attribution = explainer("lexicon").explain(["Great", "film", ",", "dull", "ending"], probe)
    assert attribution.values == pytest.approx((0.775, 0.0, 0.0, -0.425, 0.0))
    assert attribution.source == "lexicon" and probe.asked == []
