import json

import pytest

from programs.data import INJECTIONS, DataError, injected_pairs, load_examples
from tests.conftest import require_shared


def test_sst2_validation_loads():
    require_shared("sst2", "validation.jsonl")
    examples = load_examples("sst2", split="validation", n=5)
    assert len(examples) == 5 and examples[0].label in (0, 1)


def test_study_sentences_load():
    require_shared("huang2023", "sst_sentences.jsonl")
    examples = load_examples("huang2023")
    assert len(examples) == 100
    assert sum(e.label for e in examples) == 52


def test_local_jsonl_and_csv(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a fine film", "label": 1}) + "\n")
    assert load_examples(str(path))[0].text == "a fine film"
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("review,label\nawful,0\n")
    assert load_examples(str(csv_path))[0].label == 0


def test_local_dataset_directory_through_datasets(tmp_path):
    import datasets  # a required dependency: its absence is a failure, not a skip
    datasets.Dataset.from_dict({"sentence": ["good", "bad"], "label": [1, 0]}).save_to_disk(str(tmp_path / "ds"))
    examples = load_examples(str(tmp_path / "ds"))
    assert [e.label for e in examples] == [1, 0]


@pytest.mark.parametrize("row,message", [
    ({"label": 1}, "no review column"),
    ({"sentence": "", "label": 1}, "empty or non-string"),
    ({"sentence": 3, "label": 1}, "empty or non-string"),
    ({"sentence": "ok", "label": 7}, "labels must be 0"),
])
def test_bad_rows_name_the_problem(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message):
        load_examples(str(path))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_examples(str(tmp_path / "none.jsonl"))
    corrupt = tmp_path / "c.jsonl"
    corrupt.write_text("{not json\n")
    with pytest.raises(DataError, match="not valid JSON"):
        load_examples(str(corrupt))
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no examples"):
        load_examples(str(empty))


def test_injected_reviews_carry_an_instruction_for_the_opposite_label():
    require_shared("sst2", "validation.jsonl")
    pairs = injected_pairs(n=8)
    assert [a.text for _, a in pairs] == [a.text for a in load_examples("injected", n=8)]
    for i, (clean, attacked) in enumerate(pairs):
        target = "negative" if clean.label == 1 else "positive"
        assert attacked.text.startswith(clean.text + " ") and target in attacked.text
        assert attacked.label == clean.label and attacked.text.endswith(INJECTIONS[i % 4].format(target=target)[-8:])
