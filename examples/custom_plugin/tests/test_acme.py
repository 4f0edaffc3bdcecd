"""The example package's own unit tests: plugins tested the way a plugin author would,
with `distill.testing`'s record factory and filter runner, and no pipeline at all.

Run them with the package installed (or on PYTHONPATH): `pytest tests/`.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import pytest
from acme_distill import blocklist, faq_teacher
from acme_distill.blocklist import BlocklistFilter
from acme_distill.faq_teacher import FaqTeacher
from pydantic import ValidationError

from distill.errors import PluginError
from distill.filter import Drop, Edit, Keep
from distill.plugin import PluginContext
from distill.records import Message
from distill.registry import make_registry
from distill.teacher import ChatRequest
from distill.testing import make_record, run_filter


def ask(question: str, seed: int | None = 1, n: int | None = None) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=question)], seed=seed, n=n)


# -- the teacher ---------------------------------------------------------------------------


def test_the_teacher_answers_from_the_table_and_says_so():
    teacher = FaqTeacher()
    [[sample]] = teacher.generate([ask("How do I RESET my router?")])
    assert sample.text.startswith("Acme Support: ") and "reset" in sample.text.lower()
    info = teacher.model_info()
    shipped = (resources.files("acme_distill") / "faq.json").read_bytes()
    assert (info.model, info.revision, info.license) == ("acme-router-faq", "2025.1", "CC0-1.0")
    assert info.file_hash == hashlib.sha256(shipped).hexdigest()
    g = teacher.generator()
    assert g.plugin == "acme-faq" and g.sampling == {"n": 1, "seed": 0, "fallback": ""}


def test_n_samples_are_distinct_variants_and_depend_only_on_question_and_seed():
    teacher = FaqTeacher(n=2)
    [first] = teacher.generate([ask("Where do I change the password?", seed=5)])
    assert len(first) == 2 and first[0].text != first[1].text
    # the same request alone or in a batch, now or later: the same samples
    again = FaqTeacher(n=2).generate([ask("What is 5 GHz?"), ask("Where do I change the password?", seed=5)])
    assert [s.text for s in again[1]] == [s.text for s in first]
    assert len(teacher.generate([ask("password?", n=3)])[0]) == 3  # the request's n wins


def test_the_most_specific_entry_wins_and_no_match_is_the_fallback(tmp_path):
    table = {
        "name": "t",
        "license": "CC0-1.0",
        "entries": [
            {"keywords": ["light"], "answers": ["any light"]},
            {"keywords": ["orange", "light"], "answers": ["orange light"]},
        ],
    }
    (tmp_path / "t.json").write_text(json.dumps(table))
    teacher = FaqTeacher(table="t.json", fallback="ask a human")
    teacher.setup(PluginContext(base_dir=tmp_path))
    out = teacher.generate([ask("The light is orange"), ask("A green light"), ask("Hello")])
    assert [s[0].text for s in out] == ["orange light", "any light", "ask a human"]


def test_an_undeclared_license_is_reported_as_unspecified_never_guessed(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"name": "t", "entries": [{"keywords": ["x"], "answers": ["y"]}]}))
    teacher = FaqTeacher(table=str(tmp_path / "t.json"))
    assert teacher.model_info().license == "LicenseRef-Unspecified"
    declared = FaqTeacher(table=str(tmp_path / "t.json"), license="MIT")
    assert declared.model_info().license == "MIT"


def test_a_missing_or_malformed_table_stops_setup_naming_the_file(tmp_path):
    with pytest.raises(PluginError, match="missing.json"):
        FaqTeacher(table="missing.json").setup(PluginContext(base_dir=tmp_path))
    (tmp_path / "bad.json").write_text(
        json.dumps({"name": "t", "entries": [{"keywords": ["two words"], "answers": ["a"]}]})
    )
    with pytest.raises(PluginError, match=r"bad.json: entries.0.keywords.*one word"):
        FaqTeacher(table="bad.json").setup(PluginContext(base_dir=tmp_path))


# -- the filter ----------------------------------------------------------------------------


def test_the_filter_keeps_clean_records_and_drops_blocked_ones_with_a_reason():
    f = BlocklistFilter(terms=["NetGiant", "Project Falcon"])
    records = [
        make_record("Which router?", "Acme, of course."),
        make_record("Which router?", "Better than a netgiant one."),
        make_record("Which router?", "NetGiants are routers too."),  # not the whole word
        make_record("When?", "Project\n  Falcon ships in spring."),
        make_record("No answer yet"),
    ]
    decisions = run_filter(f, records)
    assert decisions[0] == Keep() and decisions[2] == Keep()
    assert decisions[1] == Drop("blocked term: 'NetGiant' in response")
    assert decisions[3] == Drop("blocked term: 'Project Falcon' in response")
    assert decisions[4] == Drop("missing field: no response to check")


def test_candidates_are_checked_too():
    f = BlocklistFilter(terms=["NetGiant"])
    record = make_record("Which?", "Acme.", candidates=[("Acme.", None), ("NetGiant.", None)])
    assert run_filter(f, [record]) == [Drop("blocked term: 'NetGiant' in candidate 2")]


def test_mask_edits_a_copy_and_keeps_the_record():
    f = BlocklistFilter(terms=["NetGiant"], action="mask", field="both")
    record = make_record("Is NetGiant better?", "No, NetGiant is not.")
    [decision] = run_filter(f, [record])
    assert isinstance(decision, Edit) and decision.reason == "masked: 2 blocked term(s) in both"
    assert [m.content for m in decision.record.messages] == ["Is [blocked] better?", "No, [blocked] is not."]
    assert record.response() == "No, NetGiant is not."  # the input is never changed in place


def test_options_are_validated():
    with pytest.raises(ValidationError, match="no letters or digits"):
        BlocklistFilter(terms=["  !! "])
    with pytest.raises(ValidationError):
        BlocklistFilter(terms=[])
    with pytest.raises(ValidationError, match="term"):
        BlocklistFilter(term=["x"])  # a misspelled key is an error, not ignored


# -- registration --------------------------------------------------------------------------


def test_both_plugins_register_through_the_hooks():
    reg = make_registry(entry_points=False, extra=[("acme-faq", faq_teacher), ("acme-blocklist", blocklist)])
    assert not reg.failures
    assert reg.get("teacher", "acme-faq").cls is FaqTeacher
    assert reg.get("filter", "acme-blocklist").cls is BlocklistFilter


def test_the_example_config_names_registered_plugins():
    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    assert config["teachers"]["faq"]["plugin"] == FaqTeacher.name
    assert config["stages"][1]["filters"][0]["plugin"] == BlocklistFilter.name


def test_a_whole_pipeline_in_process(tmp_path):
    """Both plugins in a real pipeline, found through the installed package's entry points."""
    from distill.config import parse_config
    from distill.pipeline import Pipeline

    (tmp_path / "seeds.jsonl").write_text(
        '{"question": "How do I reset it?"}\n{"question": "Is NetGiant better?"}\n{"question": "Any news?"}\n'
    )
    loaded = parse_config(
        {
            "output": str(tmp_path / "out"),
            "cache": {"enabled": False},
            "seeds": [{"path": str(tmp_path / "seeds.jsonl"), "license": "CC0-1.0", "prompt_field": "question"}],
            "teachers": {"faq": {"plugin": "acme-faq"}},
            "stages": [
                {"kind": "generate", "name": "answers", "teacher": "faq", "task": {"plugin": "response"}},
                {
                    "kind": "filter",
                    "name": "clean",
                    "filters": [{"plugin": "acme-blocklist", "options": {"terms": ["NetGiant"]}}],
                },
            ],
        }
    )
    registry = make_registry()
    assert registry.get("teacher", "acme-faq").package == "distill-acme-plugins", "install the package first"
    result = Pipeline(loaded, registry, progress=False, log=lambda m: None).run()
    stages = {s.stage: s for s in result.stages}
    assert stages["answers"].reasons == {"response: empty response": 1}  # "Any news?" has no entry
    assert stages["clean"].totals["kept"] == 1 and stages["clean"].reasons == {"acme-blocklist: blocked term": 1}
