"""The probe is the explained program: its own label slot, its demos and calibration, on the real model."""

import dspy
import pytest

from programs.demos import make_demos, pick_examples
from programs.lean_adapter import LeanAdapter, output_schema, refine_schema
from programs.probe import NEUTRAL_EXPLANATION, ProgramProbe
from programs.probe_cache import ProbeCache
from programs.self_explain import SentimentProgram, label_log_odds
from programs.slot_decoder import Fixed, compile_schema
from tests.conftest import require_shared

pytestmark = pytest.mark.model

REVIEWS = ["good acting , good story , dull ending .", "a gorgeous , witty , seductive movie .",
           "the plot is nothing but boilerplate clichés .", "an utterly incompetent conclusion ."]


def _with_demos(name, lm, decision="batch"):
    """A program with 4 gold-labelled demos (label-only programs) or hand-made explanations, calibrated."""
    require_shared("sst2", "train.jsonl")
    program = SentimentProgram(name, value_mode="expected", decision=decision)
    examples = pick_examples(4, seed=3)
    demos = make_demos("P", examples, source="label")
    if name != "P":
        for demo, example in zip(demos, examples, strict=True):
            tokens = example.text.split()
            if name.endswith("topk"):
                demo["k"], demo["top_words"] = 1, tokens[:1]
            else:
                demo["explanation"] = [[t, 0.5 if i % 2 else -0.5] for i, t in enumerate(tokens)]
    program.predict.demos = [d.with_inputs("review", *(["k"] if name.endswith("topk") else [])) for d in demos]
    if decision == "batch":
        with dspy.context(lm=lm, adapter=LeanAdapter()):
            program.calibrate(REVIEWS)
    return program


@pytest.mark.parametrize("name", ["P", "PE", "PE-topk"])
def test_a_probe_reproduces_its_programs_own_label_reading(smol_lm, name):
    """Demos, adapter and calibration included: the probe's reading is the program's own (1e-4), and its
    answer follows the program's decision rule."""
    program = _with_demos(name, smol_lm)
    with dspy.context(lm=smol_lm, adapter=LeanAdapter()):
        predictions = [program(review=r) for r in REVIEWS]
    probe = ProgramProbe(program, smol_lm)
    answers = probe.answers(REVIEWS)
    assert probe.reading == "slot" and probe.approximation is None
    for prediction, answer in zip(predictions, answers, strict=True):
        assert answer.label_log_odds == pytest.approx(label_log_odds(prediction), abs=1e-4)
        assert answer.label == prediction.label  # the calibrated decision, as the program decided
        assert answer.info["bias"] == pytest.approx(program.calibration["bias"])


def test_e_p_reads_its_label_after_a_neutral_explanation_or_decodes_it(smol_lm):
    program = _with_demos("EP", smol_lm, decision="generated")
    approximate = ProgramProbe(program, smol_lm)
    assert approximate.reading == NEUTRAL_EXPLANATION and approximate.approximation == NEUTRAL_EXPLANATION
    assert approximate.answer_prefix("a b") == _decoded_up_to_label("a b", program, neutral="0.0")
    exact = ProgramProbe(program, smol_lm, mode="same-program")
    assert exact.approximation is None and exact.describe()["probe_exact"]
    with dspy.context(lm=smol_lm, adapter=LeanAdapter()):
        own = label_log_odds(program(review=REVIEWS[0]))
    assert exact.answers(REVIEWS[:1])[0].label_log_odds == pytest.approx(own, abs=1e-4)
    assert approximate.answers(REVIEWS[:1])[0].ok


def test_e_p_calibration_decodes_its_batch_once_through_the_cache(smol_lm, tmp_path):
    """E-P's batch rule is calibrated on its label log-odds after its own decoded explanation: the program's own
    readings (1e-4), kept in the cache, so the same program calibrated again (the next shard of a sharded run)
    decodes nothing and gets the same calibration."""
    cache = ProbeCache(tmp_path / "probe.sqlite")
    programs = [_with_demos("EP", smol_lm, decision="generated") for _ in range(2)]
    with dspy.context(lm=smol_lm, adapter=LeanAdapter()):
        own = [label_log_odds(programs[0](review=r)) for r in REVIEWS]
        calls = []
        for program in programs:
            forward = program.forward
            program.forward = lambda _forward=forward, **kwargs: calls.append(1) or _forward(**kwargs)
            program.decision = "batch"
        first = programs[0].calibrate(REVIEWS, cache=cache)
        assert len(calls) == len(REVIEWS)
        assert first["bias"] == pytest.approx(-sum(own) / len(own), abs=1e-4)
        assert programs[1].calibrate(REVIEWS, cache=cache) == first and len(calls) == len(REVIEWS)


def test_a_program_with_demos_and_the_zero_shot_program_are_different_decision_functions(smol_lm, tmp_path):
    cache = ProbeCache(tmp_path / "probe.sqlite")
    program = _with_demos("PE", smol_lm)
    own = ProgramProbe(program, smol_lm, cache=cache)
    zero_shot = ProgramProbe(program, smol_lm, mode="zero-shot", cache=cache)
    assert own.fingerprint != zero_shot.fingerprint
    a, b = own.answers(REVIEWS), zero_shot.answers(REVIEWS)
    assert max(abs(x.label_log_odds - y.label_log_odds) for x, y in zip(a, b, strict=True)) > 0.1
    assert zero_shot.stats.model_calls == len(REVIEWS)  # nothing of the other's cache served it
    again = ProgramProbe(program, smol_lm, cache=cache)
    assert again.answers(REVIEWS) == a and again.stats.model_calls == 0


def test_slot_readings_are_shared_across_calibrations_and_decided_with_each_bias(smol_lm, tmp_path):
    """The same program calibrated on another batch reads the same slots: served from the cache, decided with its
    own bias. A decoded P-E answer goes on after its decided label, so it is not shared."""
    cache = ProbeCache(tmp_path / "probe.sqlite")
    program = _with_demos("PE", smol_lm)
    recalibrated = program.deepcopy()
    recalibrated.calibration = {**program.calibration, "bias": program.calibration["bias"] + 3.0, "batch": "other"}
    first = ProgramProbe(program, smol_lm, cache=cache).answers(REVIEWS)
    probe = ProgramProbe(recalibrated, smol_lm, cache=cache)
    second = probe.answers(REVIEWS)
    assert probe.stats.model_calls == 0 and probe.fingerprint != ProgramProbe(program, smol_lm).fingerprint
    for a, b in zip(first, second, strict=True):
        assert a.label_log_odds is not None and a.label_log_odds == b.label_log_odds
        assert b.info["bias"] == pytest.approx(a.info["bias"] + 3.0)
        assert b.p_positive["logprob"] > a.p_positive["logprob"]
    ProgramProbe(program, smol_lm, mode="same-program", cache=cache).answers(REVIEWS[:1])
    decoded = ProgramProbe(recalibrated, smol_lm, mode="same-program", cache=cache)
    decoded.answers(REVIEWS[:1])
    assert decoded.stats.model_calls == 1


def test_e_p_neutral_explanation_readings_are_shared_across_explanation_samples(smol_lm, tmp_path):
    """The neutral-explanation reading forces the answer up to the label, so sampled explanations (E-P's
    ``explanation_samples``) do not enter it: a program that samples is served the greedy program's readings,
    which equal its own read afresh. Its decoded answers differ, so the exact probe shares nothing."""
    cache = ProbeCache(tmp_path / "probe.sqlite")
    greedy = _with_demos("EP", smol_lm, decision="generated")
    sampled = greedy.deepcopy()
    sampled.explanation_samples = 3
    first = ProgramProbe(greedy, smol_lm, cache=cache).answers(REVIEWS)
    probe = ProgramProbe(sampled, smol_lm, cache=cache)
    assert probe.answers(REVIEWS) == first and probe.stats.model_calls == 0
    assert probe.fingerprint != ProgramProbe(greedy, smol_lm).fingerprint
    fresh = ProgramProbe(sampled, smol_lm).answers(REVIEWS)
    for a, b in zip(first, fresh, strict=True):
        assert a.label_log_odds == pytest.approx(b.label_log_odds, abs=1e-4)
    ProgramProbe(greedy, smol_lm, mode="same-program", cache=cache).answers(REVIEWS[:1])
    decoded = ProgramProbe(sampled, smol_lm, mode="same-program", cache=cache)
    decoded.answers(REVIEWS[:1])
    assert decoded.stats.model_calls == 1


def test_batched_readings_equal_one_text_at_a_time(smol_lm, engine):
    """The trie walk reads every text as it reads alone (SmolLM2: 1e-4; Gemma-3: the same splits, so exact too)."""
    for lm in (smol_lm, dspy.LM("local/x", engine=engine)):
        program = SentimentProgram("PE")
        texts = [" ".join(REVIEWS[0].split()[:k] + REVIEWS[0].split()[k + 1:]) for k in range(8)] + REVIEWS[1:]
        batched = ProgramProbe(program, lm).answers(texts)
        alone = [ProgramProbe(program, lm).answers([t])[0] for t in texts]
        for x, y in zip(batched, alone, strict=True):
            assert x.label_log_odds == pytest.approx(y.label_log_odds, abs=1e-4)


def _decoded_up_to_label(review: str, program, neutral: str) -> str:
    """What the skeleton decoder writes before the label slot when every explanation slot reads ``neutral``."""
    schema = refine_schema(output_schema(program.predict.signature), {"review": review})
    text = ""
    for segment in compile_schema(schema):
        if isinstance(segment, Fixed):
            text += segment.text
        elif neutral in segment.options:
            text += neutral + segment.closing
        else:  # the label slot
            return text
    raise AssertionError("no label slot")
