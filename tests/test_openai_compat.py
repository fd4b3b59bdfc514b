"""The OpenAI-compatible path against a real llama.cpp server on 127.0.0.1 serving the same GGUF."""


import itertools
import re

import pytest

from experiments.check_lm import check_lm
from experiments.servers import llama_server
from tests.conftest import require_shared

pytestmark = [pytest.mark.server, pytest.mark.model]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with llama_server("smollm2-135m", log=tmp_path_factory.mktemp("server") / "server.log") as base:
        yield base


def test_typed_round_trip_against_the_server(server):
    require_shared("sst2", "validation.jsonl")
    summary = check_lm("openai/smollm2-135m", api_base=server, n=3)
    assert summary["backend"] == "openai-compatible"
    assert summary["parsed"] == 3, summary["failures"]
    assert summary["tokens_per_example"] > 0


def test_server_logprobs_arrive_as_lm15_logprobs(server):
    from programs.lm import make_lm

    lm = make_lm("openai/smollm2-135m", api_base=server, cache=False)
    lm("Say yes.", max_tokens=3, logprobs=True, top_logprobs=3)
    assert lm.history[-1]["outputs"] and lm.engine.schema_style in ("auto", "json_schema", "json_object")


def test_the_protocols_penalties_are_sent_off(server):
    """An explanation copies the review's words: the OpenAI protocol's repetition penalties are sent as 0, and
    llama.cpp's own repeat_penalty, outside the protocol, is left to the server."""
    from programs.lm import make_lm
    from tests.fault_server import fault_server

    with fault_server(server, []) as (base, state):
        lm = make_lm("openai/smollm2-135m", api_base=base, cache=False)
        out = lm("Repeat: good good good good", max_tokens=8)
    assert out and state.requests
    body = state.requests[-1]
    assert body["frequency_penalty"] == 0 and body["presence_penalty"] == 0 and "repeat_penalty" not in body


def test_no_api_key_reaches_mlflow_or_an_export(server, tmp_path, monkeypatch):
    """A tiny experiment through the OpenAI-compatible path with a canary key in the environment: the key
    is used (the client reads it) but appears nowhere in the MLflow store, its artifacts, or an export."""
    require_shared("sst2", "validation.jsonl")
    from experiments.config import load_config
    from experiments.export import export_run
    from experiments.run import run_variants
    from experiments.tracking import find_variant_run
    from programs.lm import make_lm

    canary = "sk-selfx-canary-3f9a1c7e5b"
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "api.yaml").write_text(
        f"name: api\nlm: smollm2-135m\napi_base: {server}\n"
        "data: {source: sst2, train_n: 0, dev_n: 0, test_n: 2}\n"
        "variants:\n  - {program: P, decision: generated}\n"
        "measure: {mode: corrected, probe: same-program, faithfulness_n: 1, explainers: [random]}\n")
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    result = run_variants(load_config(tmp_path / "api.yaml"), uri=uri)
    assert result["variants"]
    export_run(find_variant_run("selfx-api", uri=uri), tmp_path / "export",
               make_lm("smollm2-135m", api_base=server, cache=False))
    scanned = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "api.yaml"]
    assert any(p.name == "mlflow.db" for p in scanned) and any(p.name == "program.json" for p in scanned)
    leaked = [str(p) for p in scanned if canary.encode() in p.read_bytes()]
    assert not leaked, leaked


def test_e_p_label_is_read_after_explanation_tokens_that_look_like_labels(server):
    """E-P through an OpenAI-compatible server: the answer copies a label word from the review (in the
    explanation or the restated review) before the label, and that token's alternatives include both
    labels; the label reading must come from the label's own token, after the ``"label": "`` key."""
    import dspy

    from programs.lm import make_lm
    from programs.self_explain import SentimentProgram, label_log_odds

    lm = make_lm("openai/smollm2-135m", api_base=server, cache=False)
    program = SentimentProgram("EP")
    program.predict.demos = [
        dspy.Example(review="not positive , sadly", label="negative", confidence=0.8,
                     explanation=[["not", -0.5], ["positive", 0.3], [",", 0.0], ["sadly", -0.6]],
                     restated_review="not positive , sadly").with_inputs("review"),
        dspy.Example(review="a positive surprise", label="positive", confidence=0.9,
                     explanation=[["a", 0.0], ["positive", 0.6], ["surprise", 0.4]],
                     restated_review="a positive surprise").with_inputs("review")]
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        prediction = program(review="negative reviews , but a fine film")
    content = prediction.logprobs["content"]
    tokens = [entry["token"] for entry in content]
    # the entry holding the label value's first character (servers differ in spacing after the key)
    key = re.search(r'"label"\s*:\s*"', "".join(tokens))
    at = next(i for i, end in enumerate(itertools.accumulate(map(len, tokens))) if end > key.end())
    def alternatives(entry):  # the likeliest spelling of each word (top_logprobs come likeliest first)
        words = {}
        for t in entry["top_logprobs"]:
            words.setdefault(t["token"].strip(' "'), t["logprob"])
        return words
    early = [alternatives(entry) for entry in content[:at]
             if entry["token"].strip(' "') in ("positive", "negative")]
    assert early and {"positive", "negative"} <= set(early[0])  # the explanation wrote a label word first
    def odds(a):
        return a["positive"] - a["negative"]
    read = label_log_odds(prediction)
    # the label token's reading (other spellings such as "Positive" add a little mass), not the word's
    assert read == pytest.approx(odds(alternatives(content[at])), abs=0.05)
    assert abs(read - odds(early[0])) > 0.5


def test_a_label_first_program_is_probed_through_its_label_with_the_full_answers_reading(server):
    """P-E over the API, stopped where its explanation begins: the same labels and label log-probabilities as
    the full answers (same prompt, schema and greedy tokens up to the label), for fewer generated tokens."""
    require_shared("sst2", "validation.jsonl")
    from programs.data import load_examples
    from programs.lm import make_lm
    from programs.probe import ProgramProbe
    from programs.self_explain import SentimentProgram

    texts = [example.text for example in load_examples("sst2", split="validation", n=2)]
    lm = make_lm("openai/smollm2-135m", api_base=server, cache=False)
    program = SentimentProgram("PE")
    used = {}
    answers = {}
    for mode in ("logprob", "same-program"):
        probe = ProgramProbe(program, lm, mode=mode)
        start = len(lm.history)
        answers[probe.reading] = probe.answers(texts)
        used[probe.reading] = sum(entry["usage"]["completion_tokens"] for entry in lm.history[start:])
    short, full = answers["through-label"], answers["decoded"]
    assert all(a.ok for a in short + full)
    assert [a.label for a in short] == [a.label for a in full]
    for a, b in zip(short, full, strict=True):
        assert a.info["label_logprobs"] == pytest.approx(b.info["label_logprobs"], abs=1e-3)
    assert used["through-label"] < used["decoded"]
    assert all('"explanation"' not in entry["outputs"][0]["text"] for entry in lm.history[:2])
