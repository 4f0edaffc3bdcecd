"""The license registry as data, its overrides from a config, SPDX validation, and model terms."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from util import config_dict

from distill.config.loader import parse_config
from distill.errors import ConfigError
from distill.licenses import (
    LICENSE_REF,
    UNSPECIFIED,
    LicenseOverride,
    active,
    builtin_registry,
    dataset_tag,
    model_matches,
    normalize,
    registry,
    student_tag,
    tag_for,
)
from distill.models.terms import card_license, provider_of, resolve_terms, unknown_warning

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_registry_validates_against_its_checked_in_schema():
    jsonschema = pytest.importorskip("jsonschema")
    data = yaml.safe_load((ROOT / "distill" / "data" / "licenses.yaml").read_text())
    jsonschema.validate(data, json.loads((ROOT / "schemas" / "licenses.schema.json").read_text()))


def test_every_entry_is_well_formed_and_every_model_rule_names_a_known_license():
    reg = builtin_registry()
    for key in reg.licenses:
        assert key.startswith("LicenseRef-") is bool(LICENSE_REF.match(key)), key
        assert normalize(key) == key
    for rule in reg.models:
        assert all(k in reg.licenses for k in reg.keys(rule.license)), rule
    # the families the issue names, with what their terms say
    assert reg.info("LicenseRef-Llama-3").name_prefix == "Llama 3"
    assert reg.info("LicenseRef-Llama-3").restriction == "no-improve-other-llm"
    assert reg.info("LicenseRef-Llama-3.1").name_prefix == "Llama"
    assert reg.info("LicenseRef-Gemma-Terms").restriction == "derivative-inherits-terms"
    assert reg.info("LicenseRef-OpenAI-Terms").restriction == "no-competing-models"
    assert reg.info("LicenseRef-Qwen-Research").use == "non-commercial"


@pytest.mark.parametrize(
    "expression, fragment",
    [
        ("Apache-2", "'Apache-2' is not an SPDX license id (did you mean Apache-2.0"),
        ("MIT AND LicenseRef-Nope", "unknown license id 'LicenseRef-Nope': the registry has no such LicenseRef"),
        ("LicenseRef-Lama-3", "(did you mean LicenseRef-Llama-3"),
        ("MIT AND", "invalid license expression 'MIT AND'"),
    ],
)
def test_invalid_expressions_are_errors_that_name_them(expression, fragment):
    with pytest.raises(ConfigError) as exc:
        normalize(expression)
    assert fragment in str(exc.value) and expression in str(exc.value)


def test_an_unknown_licenseref_is_never_guessed():
    # ScanCode aliases LicenseRef-Apache to Apache-2.0; the registry does not take the guess.
    with pytest.raises(ConfigError, match="unknown license id 'LicenseRef-Apache'"):
        normalize("LicenseRef-Apache")
    assert normalize("licenseref-llama-3.1") == "LicenseRef-Llama-3.1"  # case only: the same id


def test_a_misspelt_seed_license_is_a_config_error_with_a_suggestion(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["seeds"][0]["license"] = "CC-BY-NC-4"
    with pytest.raises(ConfigError) as exc:
        parse_config(cfg)
    assert (
        "seeds[0].license: invalid license expression 'CC-BY-NC-4': 'CC-BY-NC-4' is not an SPDX license id "
        "(did you mean CC-BY-NC-4.0"
    ) in str(exc.value)


def test_config_licenses_extend_the_registry_for_seeds_and_tags(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["seeds"][0]["license"] = "LicenseRef-Acme-Internal"
    with pytest.raises(
        ConfigError,
        match=r"seeds\[0\]\.license: invalid license expression.*LicenseRef-Acme-Internal.*"
        r"declare your own under `licenses:`",
    ):
        parse_config(cfg)
    cfg["licenses"] = {"LicenseRef-Acme-Internal": {"use": "non-commercial", "notices": ["(c) Acme"]}}
    loaded = parse_config(cfg)
    assert loaded.config.seeds[0].license == "LicenseRef-Acme-Internal"
    reg = loaded.license_registry()
    with active(reg):
        t = tag_for("LicenseRef-Acme-Internal AND CC0-1.0")
        assert t.use == "non-commercial" and t.notices == ["(c) Acme"] and t.unknown == []
    assert registry() is builtin_registry()  # the override was only in effect inside the block


def test_config_licenses_override_a_builtin_entry(tmp_path):
    # The Data Provenance Initiative's switch: count OpenAI outputs as non-commercial.
    cfg = config_dict(tmp_path, licenses={"LicenseRef-OpenAI-Terms": {"use": "non-commercial"}})
    reg = parse_config(cfg).license_registry()
    info = reg.info("LicenseRef-OpenAI-Terms")
    assert info.use == "non-commercial" and info.restriction == "no-competing-models"  # the rest is kept
    assert builtin_registry().info("LicenseRef-OpenAI-Terms").use == "commercial"


@pytest.mark.parametrize(
    "entry, fragment",
    [
        ({"LicenseRef-New": {"attribution": True}}, "LicenseRef-New: a license the registry does not have needs `use`"),
        ({"Not A License": {"use": "commercial"}}, "Not A License: not an SPDX license id nor a `LicenseRef-` id"),
        ({"LicenseRef-X": {"use": "free"}}, "licenses.LicenseRef-X.use"),
    ],
)
def test_bad_license_entries_are_config_errors(tmp_path, entry, fragment):
    with pytest.raises(ConfigError, match="invalid config") as exc:
        parse_config(config_dict(tmp_path, licenses=entry))
    assert fragment in str(exc.value)


def test_invalid_licenses_in_teachers_and_model_rules_are_named_by_path(tmp_path):
    from util import registry as fake_registry

    from distill.config.loader import validate_plugin_options

    cfg = config_dict(tmp_path, models=[{"model": "acme-*", "license": "LicenseRef-Lama-3"}])
    with pytest.raises(
        ConfigError,
        match=r"models\[0\]\.license: invalid license expression.*did you mean "
        r"LicenseRef-Llama-3",
    ):
        parse_config(cfg)
    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"]["license"] = "MIT AND Apache2"
    with pytest.raises(
        ConfigError,
        match=r"teachers\.writer\.options\.license: .*'Apache2' is not an SPDX license "
        r"id \(did you mean Apache-2.0",
    ):
        validate_plugin_options(parse_config(cfg), fake_registry())


def test_dataset_and_student_tags():
    a, b = tag_for("CC0-1.0 AND LicenseRef-Llama-3.1"), tag_for("MIT AND CC0-1.0")
    assert dataset_tag([a, b]) == dataset_tag([b, a])
    d = dataset_tag([a, b])
    assert d.expression == "CC0-1.0 AND LicenseRef-Llama-3.1 AND MIT" and d.use == "commercial"
    s = student_tag([d], "LicenseRef-Gemma-Terms")
    assert "LicenseRef-Gemma-Terms" in s.expression and "derivative-inherits-terms" in s.restrictions
    assert "Built with Llama" in s.notices and s.name_prefixes == ["Llama"]
    assert student_tag([d], None).unknown == []  # no base model declared: unspecified, not unknown
    assert student_tag([d], None).use == "unspecified"


@pytest.mark.parametrize(
    "pattern, model, hit",
    [
        ("gpt-*", "gpt-4o-mini", True),
        ("gpt-*", "openai/gpt-4o", True),
        ("meta-llama/Llama-3.1-*", "meta-llama/Llama-3.1-8B-Instruct", True),
        ("meta-llama/Llama-3.1-*", "meta-llama/llama-3.1-70b", True),
        ("meta-llama/Llama-3.1-*", "Llama-3.1-8B-Instruct", True),  # a local folder named like the repo
        ("meta-llama/Llama-3.1-*", "someone/Llama-3.1-8B-finetune", False),
        ("meta-llama/Meta-Llama-3-*", "meta-llama/Llama-3.1-8B", False),
    ],
)
def test_model_globs(pattern, model, hit):
    assert model_matches(pattern, model) is hit


def _opts(**kw):
    return SimpleNamespace(**{"license": None, **kw})


def _resolve(plugin, options, reported=UNSPECIFIED, model=None, models=(), base=Path(".")):
    return resolve_terms(
        key="writer",
        plugin=plugin,
        options=options,
        reported=reported,
        model=model or options.model,
        config_models=models,
        reg=builtin_registry(),
        base_dir=base,
    )


def test_api_models_resolve_by_provider_and_id():
    assert provider_of("openai", _opts(model="gpt-4o", base_url=None)) == "openai"
    assert provider_of("openai", _opts(model="x", base_url="http://user:secret@127.0.0.1:8000/v1")) == "self-hosted"
    official = _opts(model="gpt-4o", base_url="https://api.openai.com/v1")
    assert _resolve("openai", official).license == "LicenseRef-OpenAI-Terms"
    assert "registry rule gpt-*" in _resolve("openai", official).how
    # the same name on someone's own server is not OpenAI's model: no guess
    assert _resolve("openai", _opts(model="gpt-4o", base_url="http://127.0.0.1:8000/v1")).license == UNSPECIFIED
    served = _opts(model="meta-llama/Llama-3.1-8B-Instruct", base_url="http://127.0.0.1:8000/v1")
    assert _resolve("openai", served).license == "LicenseRef-Llama-3.1"
    assert _resolve("vllm", _opts(model="meta-llama/Meta-Llama-3-8B-Instruct")).license == "LicenseRef-Llama-3"
    assert (
        _resolve("openai", _opts(model="claude-sonnet-4", base_url="https://api.anthropic.com/v1")).license
        == "LicenseRef-Anthropic-Commercial-Terms"
    )


def test_declared_and_configured_terms_come_first():
    from distill.licenses import ModelRule

    opts = _opts(model="meta-llama/Llama-3.1-8B-Instruct", license="MIT")
    t = _resolve("vllm", opts)
    assert (t.license, t.how) == ("MIT", "declared in teachers.writer.options.license")
    rule = ModelRule(model="meta-llama/*", license="LicenseRef-Llama-3.3")
    t = _resolve("vllm", _opts(model="meta-llama/Llama-3.1-8B-Instruct"), reported="Apache-2.0", models=[rule])
    assert t.license == "LicenseRef-Llama-3.3" and t.how.startswith("config models[0]")
    t = _resolve("vllm", _opts(model="some/folder"), reported="Apache-2.0")  # e.g. its distill-model.json
    assert t.license == "Apache-2.0" and t.how == "reported by the vllm plugin"


@pytest.mark.parametrize(
    "front, expected",
    [
        ("license: gemma", "LicenseRef-Gemma-Terms"),
        ("license: other\nlicense_name: qwen-research", "LicenseRef-Qwen-Research"),
        ("license: apache-2.0", "Apache-2.0"),
        ("license: llama3.1", "LicenseRef-Llama-3.1"),
        ("license: other\nlicense_name: my-own", None),
    ],
)
def test_local_folders_by_what_their_card_declares(tmp_path, front, expected):
    folder = tmp_path / "student-base"
    folder.mkdir()
    (folder / "README.md").write_text(f"---\n{front}\n---\n# A model\n")
    assert card_license(folder, builtin_registry()) == expected
    t = _resolve("transformers", _opts(model="student-base"), model="student-base", base=tmp_path)
    assert t.license == (expected or UNSPECIFIED)


def test_unknown_model_warning_names_the_teacher_and_how_to_declare():
    t = _resolve("openai", _opts(model="mystery-7b", base_url="http://10.0.0.5/v1"))
    assert not t.known and t.license == UNSPECIFIED
    msg = unknown_warning("writer", "openai", "mystery-7b")
    assert "teacher 'writer'" in msg and "mystery-7b" in msg and "`license:` in teachers.writer.options" in msg


def test_license_override_model_has_every_registry_field():
    from distill.licenses import LicenseInfo

    assert set(LicenseOverride.model_fields) == set(LicenseInfo.model_fields)
