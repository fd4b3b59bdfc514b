"""Teacher demos carry the probe's occlusion values."""

import pytest

from programs.demos import make_demos, pick_examples
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
