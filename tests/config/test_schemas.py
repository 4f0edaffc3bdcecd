"""The checked-in JSON Schemas match the pydantic models they are generated from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config.schema import SCHEMAS, render

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", SCHEMAS)
def test_checked_in_schema_is_current(name):
    path = ROOT / "schemas" / f"{name}.schema.json"
    assert path.read_text() == render(name), (
        f"{path} is out of date: run `distill schema {name} > schemas/{name}.schema.json`"
    )


def test_record_schema_validates_a_real_record():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is an optional test dependency")
    from distill.records import Generator, Message, Record, Source

    r = Record(id="x", messages=[Message(role="user", content="hi")])
    r.provenance.sources.append(Source(dataset="d", row=1, license="MIT"))
    r.provenance.generators.append(Generator(plugin="t", model="m", license="MIT"))
    r.add_event("seeds", "loaded")
    jsonschema.validate(json.loads(r.to_json()), json.loads(render("record")))


#: Every shipped pipeline config (an example folder may hold variants beside `config.yaml`).
EXAMPLES = sorted(
    str(p.relative_to(ROOT / "examples")) for p in (ROOT / "examples").glob("*/*.yaml") if "stages:" in p.read_text()
)


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_examples_validate_against_the_config_schema(example):
    """What the README tells users (validate your config in an editor with the schema) works for
    the shipped configs, shorthands included (`- perplexity`, `data: sft`)."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is an optional test dependency")
    import yaml

    config = yaml.safe_load((ROOT / "examples" / example).read_text())
    jsonschema.validate(config, json.loads((ROOT / "schemas" / "config.schema.json").read_text()))


# custom_plugin's plugins come from the example's own package: tests/test_custom_plugin_example.py
@pytest.mark.parametrize("example", [e for e in EXAMPLES if not e.startswith("custom_plugin/")])
def test_the_examples_name_installed_plugins_with_valid_options(example):
    from distill.config.loader import load_config, validate_plugin_options
    from distill.registry import make_registry

    validate_plugin_options(load_config(ROOT / "examples" / example), make_registry())
