import pytest

from experiments.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_validate():
    quick = load_config()
    assert quick.name == "quick" and quick.lm == "local" and len(quick.variants) >= 2
    assert load_config("paper").data.source == "huang2023"


@pytest.mark.parametrize("text,message", [
    ("name: x\nvariants:\n  - {program: XYZ}\n", "variants\\[0\\].program: 'XYZ' is not allowed"),
    ("name: x\nmeasure: {mode: strict}\n", "measure.mode: 'strict' is not allowed"),
    ("name: x\ndata: {test_n: many}\n", "data.test_n: expected an integer"),
    ("name: x\nsearch: {space: {colour: [red]}}\n", "unknown dimension 'colour'"),
    ("name: x\nbogus: 1\n", "unknown key\\(s\\) \\['bogus'\\]"),
    ("name: x\nsearch: {objectives: [beauty]}\n", "'beauty' is not allowed"),
    ("name: x\ndata: {dev_n: -3}\n", "must be >= 0"),
    ("variants: []\n", "at least a 'name'"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_bad_configs_name_the_key_and_the_allowed_values(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_config_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="quick"):
        load_config("no-such-config")


def test_api_models_sample_importances_and_refuse_expected_values(tmp_path):
    """Expected values need the embedded decoder: an API config defaults to sample and rejects expected."""
    base = "name: api\nlm: openai/gpt-4o-mini\n"
    (tmp_path / "ok.yaml").write_text(base + "variants:\n  - {program: PE}\n")
    config = load_config(tmp_path / "ok.yaml")
    assert config.variants[0].value_mode == "sample" and config.search.space["value_mode"] == ("sample",)
    (tmp_path / "bad.yaml").write_text(base + "variants:\n  - {program: PE, value_mode: expected}\n")
    with pytest.raises(ConfigError, match=r"variants\[0\]\.value_mode.*embedded"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "space.yaml").write_text(base + "search:\n  space: {value_mode: [expected]}\n")
    with pytest.raises(ConfigError, match=r"search\.space\.value_mode"):
        load_config(tmp_path / "space.yaml")
    local = load_config("quick")
    assert any(v.value_mode == "expected" for v in local.variants)


def test_format_is_a_variant_key_and_a_search_dimension(tmp_path):
    path = write(tmp_path, "name: x\nvariants:\n  - {program: EP, format: polarity}\n"
                           "search: {space: {format: [numeric, polarity], program: [PE, EP]}}\n")
    config = load_config(path)
    assert config.variants[0].format == "polarity" and "polarity" in config.variants[0].name
    assert config.search.space["format"] == ("numeric", "polarity")
    with pytest.raises(ConfigError, match=r"variants\[0\].format: 'words' is not allowed"):
        load_config(write(tmp_path, "name: x\nvariants:\n  - {program: EP, format: words}\n"))
    with pytest.raises(ConfigError, match="format: 'words' is not allowed"):
        load_config(write(tmp_path, "name: x\nsearch: {space: {format: [words]}}\n"))


def test_explanation_samples_is_a_variant_key_and_a_search_dimension(tmp_path):
    """E-P reads its label over K sampled explanations when a variant (or a trial) asks; other programs do not use
    it, so it leaves their names (and the optimiser's distinct-variant count) alone."""
    from experiments.optimize.search import distinct_variants
    from experiments.variants import _bare_program, variant_of

    config = load_config(write(tmp_path, "name: x\nvariants:\n  - {program: EP, explanation_samples: 4}\n"
                                         "  - {program: PE, explanation_samples: 4}\n"
                                         "search: {space: {program: [PE, EP], explanation_samples: [0, 4]}}\n"))
    ep, pe = config.variants
    assert ep.label_samples == 4 and ep.name.endswith("-4samples") and pe.label_samples == 0
    assert "samples" not in pe.name and pe.name == pe.model_copy(update={"explanation_samples": 0}).name
    assert _bare_program(ep).explanation_samples == 4 and _bare_program(pe).explanation_samples == 0
    assert distinct_variants(config.search.space) == 3  # PE once, EP greedy, EP over 4 samples
    assert variant_of({k: str(v) for k, v in ep.model_dump().items()}) == ep
    assert variant_of({"program": "EP"}).explanation_samples == 0  # a run logged before the key existed
    with pytest.raises(ConfigError, match="explanation_samples: must be >= 0"):
        load_config(write(tmp_path, "name: x\nvariants:\n  - {program: EP, explanation_samples: -1}\n"))
    api = "name: api\nlm: openai/gpt-4o-mini\n"
    with pytest.raises(ConfigError, match=r"variants\[0\]\.explanation_samples.*embedded model"):
        load_config(write(tmp_path, api + "variants:\n  - {program: EP, explanation_samples: 4}\n"))
    with pytest.raises(ConfigError, match=r"search\.space\.explanation_samples.*embedded model"):
        load_config(write(tmp_path, api + "search: {space: {explanation_samples: [0, 2]}}\n"))
    assert load_config(write(tmp_path, api + "variants:\n  - {program: PE, explanation_samples: 4}\n"))


def test_config_digests_ignore_an_unset_later_field(tmp_path):
    """Digests name resumable runs and optimisation studies: configs that leave explanation_samples out keep the
    digest they had before it existed (their content without the key), and setting it changes the digest."""
    import hashlib
    import json

    from experiments.variants import config_digest

    for name in ("quick", "study"):
        config = load_config(name)
        before = config.model_dump(mode="json")
        for variant in before["variants"]:
            del variant["explanation_samples"], variant["demo_seed"]
        assert config_digest(config) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    plain = load_config(write(tmp_path, "name: x\nvariants:\n  - {program: EP}\n"))
    sampled = load_config(write(tmp_path, "name: x\nvariants:\n  - {program: EP, explanation_samples: 4}\n"))
    assert config_digest(plain) != config_digest(sampled)
    drawn = load_config(write(tmp_path, "name: x\nvariants:\n  - {program: EP, demo_seed: 1}\n"))
    assert config_digest(plain) != config_digest(drawn)


def test_demo_seed_is_a_variant_key_and_a_search_dimension(tmp_path):
    """Which draw of training reviews becomes the demos, counted from the config's seed: a search can choose among
    draws, and a draw other than the seed's own is part of the variant's name."""
    from experiments.optimize.search import distinct_variants
    from experiments.variants import build_program, variant_of
    from programs.demos import build_demos
    from programs.probe_cache import ProbeCache

    config = load_config(write(tmp_path, "name: x\nseed: 1\nvariants:\n"
                                         "  - {program: PE, format: polarity, demos: 4, demo_source: lexicon, "
                                         "demo_seed: 2}\n"
                                         "search: {space: {program: [PE], demos: [0, 4], demo_seed: [0, 1, 2]}}\n"))
    (variant,) = config.variants
    assert "-4demos-lexicon-draw2-" in variant.name and "draw" not in variant.model_copy(update={"demo_seed": 0}).name
    assert distinct_variants(config.search.space) == 4  # zero-shot once, three draws of 4 demos
    assert variant_of({k: str(v) for k, v in variant.model_dump().items()}) == variant
    assert variant_of({"program": "PE"}).demo_seed == 0  # a run logged before the key existed
    program = build_program(variant, None, [], ProbeCache(str(tmp_path / "cache.sqlite")), config.seed)
    reviews = [demo.review for demo in program.predict.demos]
    assert reviews == [d.review for d in build_demos("PE", 4, lm=None, source="lexicon", seed=3, format="polarity")]
    assert reviews != [d.review for d in build_demos("PE", 4, lm=None, source="lexicon", seed=1, format="polarity")]
    with pytest.raises(ConfigError, match="demo_seed: must be >= 0"):
        load_config(write(tmp_path, "name: x\nsearch: {space: {demo_seed: [-1]}}\n"))


def test_lexicon_demos_are_a_demo_source_of_configs_and_the_search_space(tmp_path):
    path = write(tmp_path, "name: x\nvariants:\n  - {program: PE, format: polarity, demos: 16, demo_source: lexicon}\n"
                           "search: {space: {demo_source: [occlusion, lexicon]}}\n")
    config = load_config(path)
    assert config.variants[0].name == "PE-polarity-16demos-lexicon-generated-expected-lean"
    assert config.search.space["demo_source"] == ("occlusion", "lexicon")
    with pytest.raises(ConfigError, match="demo_source: 'thesaurus' is not allowed"):
        load_config(write(tmp_path, "name: x\nvariants:\n  - {program: PE, demo_source: thesaurus}\n"))
