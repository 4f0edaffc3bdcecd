"""Config errors name the key, suggest the fix, and never leak a secret."""

from __future__ import annotations

import json

import pytest
from util import config_dict, dump, pipeline, registry

from distill.config.loader import load_config, parse_config, validate_plugin_options
from distill.errors import ConfigError


def _err(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        loaded = parse_config(cfg)
        validate_plugin_options(loaded, registry())
    return str(info.value)


def test_misspelled_top_level_key_is_named_with_a_suggestion(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stagess"] = cfg.pop("stages")
    msg = _err(cfg)
    assert "stagess: unknown key (did you mean 'stages'?)" in msg
    assert "stages: required key is missing" in msg


def test_misspelled_stage_key_path_uses_list_indices_not_union_tags(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"][2]["batchsize"] = 3
    assert "stages[2].batchsize: unknown key (did you mean 'batch_size'?)" in _err(cfg)


def test_misspelled_plugin_option_is_named_with_its_full_path(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"][2]["filters"][0]["options"]["min_wrds"] = 3
    assert "stages[2].filters[0].options.min_wrds: unknown key (did you mean 'min_words'?)" in _err(cfg)


def test_wrong_type_names_the_key_and_the_value(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"][1]["batch_size"] = "lots"
    msg = _err(cfg)
    assert "stages[1].batch_size:" in msg and "'lots'" in msg


def test_unknown_plugin_lists_the_known_ones(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"][2]["filters"][1] = "exact-dedupe"
    msg = _err(cfg)
    assert "stages[2].filters[1].plugin: unknown filter plugin 'exact-dedupe'" in msg
    assert "Did you mean 'exact-dedup'?" in msg
    known = msg.split("Known filters: ")[1].split("\n")[0].rstrip(".").split(", ")
    assert {"crashing", "exact-dedup", "length", "near-dedup", "pii"} <= set(known) and known == sorted(known)


def test_unknown_teacher_reference(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"][1]["teacher"] = "writr"
    assert "stages[1].teacher: no teacher named 'writr' (did you mean 'writer'?)" in _err(cfg)


def test_unknown_stage_kind(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"][0]["kind"] = "generat"
    assert "stages[0]" in _err(cfg)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("- a\n- b\n", "must be a mapping of keys to values"),
        ("", "got empty"),
        ("output: [unclosed\n", "invalid YAML at line"),
        ("just a string", "got a str"),
    ],
)
def test_bad_files_get_a_message_not_a_traceback(tmp_path, text, expected):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_env_interpolation_and_secrets_never_persist(tmp_path, monkeypatch):
    secret = "sk-canary-9f8e7d6c5b4a"
    monkeypatch.setenv("CANARY_KEY", secret)
    monkeypatch.setenv("ECHO_LICENSE", "MIT")
    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"]["api_key"] = "${CANARY_KEY}"
    cfg["teachers"]["writer"]["options"]["license"] = "${ECHO_LICENSE}"
    cfg["seeds"][0]["name"] = "acme-${MISSING_VAR:-seeds}"
    loaded = parse_config(cfg)
    assert loaded.config.teachers["writer"].options["api_key"] == secret
    assert loaded.config.seeds[0].name == "acme-seeds"
    pipeline(cfg).run()
    files = [f for f in (tmp_path / "out").rglob("*") if f.is_file()]
    assert len(files) > 10
    for f in files:
        assert secret.encode() not in f.read_bytes(), f
    run = json.loads((tmp_path / "out/run.json").read_text())
    assert run["config"]["teachers"]["writer"]["options"]["api_key"] == "${CANARY_KEY}"
    kept = (tmp_path / "out/stages/responses/kept-00000.jsonl").read_text()
    assert '"license":"MIT"' in kept.replace(" ", "")


def test_missing_env_var_names_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"]["license"] = "${NOPE_KEY}"
    with pytest.raises(ConfigError, match=r"teachers.writer.options.license: environment variable NOPE_KEY is not set"):
        parse_config(cfg)


def test_relative_output_resolves_against_the_config_folder(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["output"] = "out"
    loaded = load_config(dump(tmp_path, cfg))
    assert loaded.config.output == tmp_path / "out"


def test_duplicate_stage_names(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"][3]["name"] = "clean"
    assert "duplicate stage name 'clean'" in _err(cfg)
