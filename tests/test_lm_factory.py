import pytest

from programs.lm import LMSpecError, make_lm, parse_lm_spec


def test_local_specs():
    assert parse_lm_spec("local").backend == "local"
    assert parse_lm_spec("local:smollm2-135m").model == "smollm2-135m"
    assert parse_lm_spec("local:/models/x.gguf").model == "/models/x.gguf"


def test_api_base_makes_a_compatible_backend():
    spec = parse_lm_spec("openai/smol", api_base="http://127.0.0.1:9/v1")
    assert (spec.backend, spec.model, spec.api_base) == ("openai-compatible", "smol", "http://127.0.0.1:9/v1")


@pytest.mark.parametrize("bad", ["", "gpt-4o", "local:nope", "openai/", "anthropic/claude"])
def test_unknown_specs_name_the_valid_forms(bad):
    with pytest.raises(LMSpecError) as info:
        parse_lm_spec(bad)
    assert "local" in str(info.value)


def test_openai_needs_the_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LMSpecError, match="OPENAI_API_KEY"):
        make_lm("openai/gpt-4o-mini")


def test_openai_lm_state_holds_no_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-123")
    lm = make_lm("openai/gpt-4o-mini")
    assert "SECRET" not in repr(lm.dump_state())


def test_compatible_engine_state_and_pickle_hold_no_key(monkeypatch):
    import pickle

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-456")
    lm = make_lm("openai/x", api_base="http://127.0.0.1:9/v1")
    lm.engine._client()  # the client holds the key once made
    assert "SECRET" not in repr(lm.dump_state())
    assert b"SECRET" not in pickle.dumps(lm.engine)


def test_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF model file not found"):
        make_lm(f"local:{tmp_path}/none.gguf")
