"""Bad input, case by case, through the command line: one clear line naming the input and what to do.

Exit 2 is for selfx's own input errors, exit 1 (one line, ``--debug`` for the traceback) for everything
else. Every case here is a row of the table in ``docs/bad-input.md``; a test checks the two agree.
"""

import json
import re
from pathlib import Path

import pytest

from experiments.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"


def jsonl(*rows: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


# case -> (files to write, argv ({d} is the folder), exit code, what the one line must say[, environment])
CASES = {
    "data file missing": ({}, ["evaluate", "--data", "{d}/none.jsonl", "--n", "1"], 2, "data file not found"),
    "data file empty": ({"e.jsonl": ""}, ["evaluate", "--data", "{d}/e.jsonl"], 2, "no examples found"),
    "data file corrupt": ({"c.jsonl": "{not json\n"}, ["evaluate", "--data", "{d}/c.jsonl"], 2, "not valid JSON"),
    "review column missing": ({"m.jsonl": jsonl({"label": 1})}, ["evaluate", "--data", "{d}/m.jsonl"], 2,
                              "no review column"),
    "review not a string": ({"s.jsonl": jsonl({"sentence": 3, "label": 1})}, ["evaluate", "--data", "{d}/s.jsonl"],
                            2, "empty or non-string"),
    "review empty": ({"s.jsonl": jsonl({"sentence": "", "label": 1})}, ["evaluate", "--data", "{d}/s.jsonl"], 2,
                     "empty or non-string"),
    "label outside the label set": ({"l.jsonl": jsonl({"sentence": "ok", "label": 7})},
                                    ["evaluate", "--data", "{d}/l.jsonl"], 2, "labels must be 0"),
    "unknown LM spec": ({}, ["check-lm", "--lm", "gpt-nonsense", "--n", "1"], 2, "unknown LM spec"),
    "--api-base not a URL": ({}, ["check-lm", "--lm", "m", "--api-base", "localhost:8000", "--n", "1"], 2,
                             "must be an http"),
    "--api-base unreachable": ({}, ["check-lm", "--lm", "m", "--api-base", "http://127.0.0.1:9/v1", "--n", "1"], 1,
                               "cannot reach the API at http://127.0.0.1:9/v1"),
    "expected values on an API model": ({}, ["evaluate", "--lm", "m", "--api-base", "http://127.0.0.1:9/v1",
                                             "--value-mode", "expected", "--n", "1"], 2, "--value-mode sample"),
    "unknown program": ({}, ["evaluate", "--program", "XY", "--n", "1"], 2, "unknown program"),
    "--n not positive": ({}, ["evaluate", "--n", "0"], 2, "--n must be a positive number"),
    "--shard not K/N": ({}, ["evaluate", "--shard", "3/2", "--n", "4"], 2, "--shard 3/2: give K/N with 1 <= K <= N"),
    "--shard not numbers": ({}, ["evaluate", "--shard", "a/2", "--n", "4"], 2,
                            "--shard a/2: give K/N with 1 <= K <= N"),
    "more shards than sentences": ({}, ["evaluate", "--shard", "1/5", "--n", "4"], 2,
                                   "5 shards of --n 4 examples would leave some empty"),
    "merge: a shard missing": ({"a.json": json.dumps({"PE": {"examples": [], "shard": {
        "index": 1, "count": 2, "start": 0, "stop": 1, "of": 2}}})}, ["merge", "{d}/a.json"], 2,
        r"PE: shards \[1\] of 2 given; pass each of shards 1 ... 2 once"),
    "merge: not a shard": ({"a.json": json.dumps({"PE": {"examples": []}})}, ["merge", "{d}/a.json"], 2,
                           "a.json: a whole run, not a shard"),
    "merge: not a report": ({"a.json": "[1, 2]"}, ["merge", "{d}/a.json"], 2, "a.json: not a selfx evaluate report"),
    "--skip negative": ({}, ["evaluate", "--skip", "-1", "--n", "1"], 2, "--skip must be 0 or a positive number"),
    "--skip past the data": ({"t.jsonl": jsonl({"sentence": "fine", "label": 1})},
                             ["evaluate", "--data", "{d}/t.jsonl", "--skip", "1", "--n", "1"], 2,
                             "--skip 1 leaves no sentences of .*t.jsonl: skip fewer than it has"),
    "--lexicon without --faithfulness": ({}, ["evaluate", "--lexicon", "--n", "1"], 2,
                                         "--lexicon is a reference explanation for --faithfulness: add --faithfulness"),
    "--lime-samples negative": ({}, ["evaluate", "--lime-samples", "-1", "--n", "1"], 2, "--lime-samples must be"),
    "config file missing": ({}, ["run", "{d}/none.yaml"], 2, "config file not found.*shipped configs"),
    "config value not allowed": ({"c.yaml": "name: x\nvariants:\n  - {program: XYZ}\n"}, ["run", "{d}/c.yaml"], 2,
                                 "variants\\[0\\].program: 'XYZ' is not allowed"),
    "config value of the wrong type": ({"c.yaml": "name: x\ndata: {test_n: many}\n"}, ["run", "{d}/c.yaml"], 2,
                                       "data.test_n: expected an integer"),
    "unknown metric name": ({"c.yaml": "name: x\nsearch: {objectives: [beauty]}\n"}, ["optimize", "{d}/c.yaml"], 2,
                            "'beauty' is not allowed"),
    "unknown config key": ({"c.yaml": "name: x\nbogus: 1\n"}, ["run", "{d}/c.yaml"], 2, "unknown key"),
    "tracking URI unwritable": ({"c.yaml": "name: x\n"}, ["run", "{d}/c.yaml", "--tracking-uri",
                                                          "sqlite:////proc/selfx/mlflow.db"], 2,
                                "tracking store sqlite:////proc/selfx/mlflow.db: cannot create"),
    "tracking database corrupt": ({"c.yaml": "name: x\n", "bad.db": "garbage"},
                                  ["run", "{d}/c.yaml", "--tracking-uri", "sqlite:///{d}/bad.db"], 2,
                                  "cannot be opened.*move a corrupt database aside"),
    "probe cache corrupt": ({"cache.sqlite": "garbage"}, ["study", "--cache", "{d}/cache.sqlite", "--n", "1",
                                                          "--no-mlflow"], 2, "probe cache .* delete a corrupt file"),
    "Optuna database corrupt": ({"c.yaml": "name: x\nsearch: {storage: 'sqlite:///{d}/optuna.db'}\n",
                                 "optuna.db": "garbage"},
                                ["optimize", "{d}/c.yaml", "--tracking-uri", "sqlite:///{d}/mlflow.db"], 2,
                                "optimisation storage .* cannot be used.*search.storage"),
    "Optuna storage unreachable": ({"c.yaml": "name: x\n"},
                                   ["optimize", "{d}/c.yaml", "--storage", "postgresql://selfx:secret@127.0.0.1:1/optuna",
                                    "--tracking-uri", "sqlite:///{d}/mlflow.db"], 2,
                                   r"storage postgresql\+psycopg://selfx:\*\*\*@127.0.0.1:1/optuna cannot be used"),
    "workers not positive": ({"c.yaml": "name: x\n"}, ["optimize", "{d}/c.yaml", "--workers", "0"], 2,
                             "--workers 0: give 1 or more"),
    "run id unknown": ({}, ["report", "0123456789abcdef", "--tracking-uri", "sqlite:///{d}/mlflow.db"], 2,
                       "no MLflow run '0123456789abcdef'"),
    "experiment unknown": ({}, ["export", "--experiment", "nope", "--tracking-uri", "sqlite:///{d}/mlflow.db"], 2,
                           "no MLflow experiment 'nope'"),
    "SELFX_LLAMA_SERVER not a binary": ({}, ["bench", "--no-mlflow"], 2,
                                        "SELFX_LLAMA_SERVER=/nonexistent/llama-server is not an executable file",
                                        {"SELFX_LLAMA_SERVER": "/nonexistent/llama-server"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_clear_line(case, tmp_path, capsys, monkeypatch):
    files, argv, code, message, *env = CASES[case]
    for name, value in (env[0] if env else {}).items():
        monkeypatch.setenv(name, value)
    for name, text in files.items():
        (tmp_path / name).write_text(text.replace("{d}", str(tmp_path)))
    assert main([a.replace("{d}", str(tmp_path)) for a in argv]) == code
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("llama")]
    assert len(err) == 1 and re.search(message, err[0]), err
    assert "Traceback" not in err[0] and "secret" not in err[0]  # a password in an input is never repeated


def test_every_case_is_in_the_docs_table():
    rows = [line.split("|")[1].strip() for line in DOC.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith("| case")]
    assert set(CASES) | set(MODEL_CASES) == set(rows)


MODEL_CASES = ("review longer than the context", "unicode and control characters", "k larger than the review")


@pytest.mark.model
def test_a_review_longer_than_the_context_is_a_counted_failure(smol_lm):
    from experiments.predict import predict
    from programs.self_explain import SentimentProgram
    from programs.types import Example

    examples = [Example("0", "a fine film", 1), Example("1", " ".join(["word"] * 10_000), 0),
                Example("2", "caf\u00e9 \u2014 na\u00efve \x07 film \U0001F600", 1)]
    ran = predict(SentimentProgram("PE-topk"), examples, smol_lm)
    failures = [a.failure for a in ran.answers]
    assert failures[0] is None and failures[2] is None  # unicode and control characters are just text
    assert failures[1].startswith("context overflow")
    assert len(ran.attributions[2].values) == len(examples[2].tokens)


def test_k_is_capped_by_the_review():
    from programs.types import topk_size

    assert topk_size(3, 2.0) == 3 and topk_size(1, 0.2) == 1 and topk_size(0) == 0
