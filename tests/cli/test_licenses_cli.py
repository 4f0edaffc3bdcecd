"""`distill licenses explain` and `distill licenses list`, as a user calls them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from distill.cli.app import app
from distill.licenses import builtin_registry


def _cli(*args: str):
    return CliRunner().invoke(app, ["licenses", *args])


def test_explain_an_unlisted_variant_says_probably_which_family_and_what_to_declare():
    r = _cli("explain", "Qwen/Qwen2.5-Math-7B", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["license"], data["known"], data["family"]) == ("LicenseRef-Unspecified", False, "qwen")
    assert {c["license"] for c in data["candidates"]} >= {"Apache-2.0", "LicenseRef-Qwen-Research"}
    research = next(c for c in data["candidates"] if c["license"] == "LicenseRef-Qwen-Research")
    assert research["use"] == "non-commercial"
    assert 'models: [{model: "Qwen/Qwen2.5-Math-7B", license: ID}]' in data["declare"]
    r = _cli("explain", "Qwen/Qwen2.5-Math-7B")
    assert "probably a qwen model" in r.stdout and "declare:" in r.stdout


def test_explain_a_checked_id_names_its_rule_and_what_the_terms_allow():
    data = json.loads(_cli("explain", "meta-llama/Llama-3.1-8B-Instruct", "--json").stdout)
    assert data["license"] == "LicenseRef-Llama-3.1" and data["why"] == "registry rule meta-llama/Llama-3.1-*"
    (terms,) = data["terms"]
    assert terms["name_prefix"] == "Llama" and terms["monthly_user_cap"] == 700000000


def test_explain_an_api_model_points_at_its_provider():
    data = json.loads(_cli("explain", "gpt-4o", "--json").stdout)
    assert not data["known"] and data["at_other_providers"][0]["provider"] == "openai"
    data = json.loads(_cli("explain", "gpt-4o", "--provider", "openai", "--json").stdout)
    assert data["license"] == "LicenseRef-OpenAI-Terms"


def test_explain_a_folder_reads_its_card_and_flags_a_contradicting_declaration(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: gemma\n---\n")
    data = json.loads(_cli("explain", str(tmp_path), "--json").stdout)
    assert data["license"] == "LicenseRef-Gemma-Terms" and "front matter license: gemma" in data["why"]
    data = json.loads(_cli("explain", str(tmp_path), "--license", "MIT", "--json").stdout)
    assert data["license"] == "MIT" and "terms-conflict" in data["conflict"]


def test_explain_a_bad_declaration_exits_2_naming_it():
    r = _cli("explain", "x", "--license", "Apache-2")
    assert r.exit_code == 2 and "Apache-2" in r.stderr


def test_list_shows_the_registry_with_its_version():
    reg = builtin_registry()
    r = _cli("list")
    assert r.exit_code == 0 and f"license registry version {reg.version}" in r.stdout
    data = json.loads(_cli("list", "--json").stdout)
    assert data["version"] == reg.version and len(data["models"]) == len(reg.models)
    assert {f["family"] for f in data["families"]} >= {"qwen", "llama", "gemma", "mistral", "deepseek", "phi"}
    assert all(rule["checked"] for rule in data["models"])
