"""The `rule-answer` filter: records a named function picks out get a fixed answer, recorded as
written by a rule; in a pipeline, the teacher is then asked only about the others."""

from __future__ import annotations

import json

import pytest
from fake_plugins import EchoTeacher
from util import QUESTIONS, config_dict, pipeline

from distill.errors import PluginError
from distill.filter import KEEP, Drop, Edit
from distill.io.store import read_shards
from distill.records import Candidate
from distill.testing import make_record, run_filter
from distill_plugins.filters.rule_answer import RuleAnswer

REDIRECT = "Acme Support: Let's keep the discussion relevant to your Acme router."


def _rule(**options):
    return RuleAnswer(when="reward_fns:off_topic", answer=REDIRECT, **options)


def test_picked_records_get_the_fixed_answer_and_lose_their_candidates():
    chess = make_record("What are the rules of chess?", "Chess is a board game.", row=0)
    chess.candidates = [Candidate(content="Chess is a board game.", score=0.2)]
    router = make_record("How do I reset my router?", None, row=1)
    decisions = run_filter(_rule(), [chess, router])
    assert decisions[1] == KEEP
    edit = decisions[0]
    assert isinstance(edit, Edit) and "answered by rule reward_fns:off_topic (not a model)" in edit.reason
    assert edit.record.response() == REDIRECT and edit.record.candidates == []
    assert edit.record.metadata["answered_by"] == "rule: reward_fns:off_topic"
    assert [m.role for m in edit.record.messages] == ["user", "assistant"]
    assert chess.response() == "Chess is a board game."  # the input record is not changed in place
    assert edit.record.provenance.generators == chess.provenance.generators  # no model is added


def test_negate_keep_answers_and_drop_the_rest():
    chess = make_record("What are the rules of chess?", "A seed's answer.", row=0)
    router = make_record("How do I reset my router?", None, row=1)
    assert run_filter(_rule(replace=False), [chess])[0] == KEEP  # an answered record keeps its answer
    on = run_filter(_rule(negate=True), [chess, router])
    assert on[0] == KEEP and isinstance(on[1], Edit)
    dropped = run_filter(_rule(otherwise="drop"), [router])[0]
    assert isinstance(dropped, Drop) and dropped.reason == "not answered by rule: reward_fns:off_topic did not pick it"


def test_keep_share_drops_a_stable_part_of_what_the_rule_would_answer():
    off = [make_record(f"What are the rules of game {i}?", None, row=i) for i in range(200)]
    on = make_record("How do I reset my router?", None, row=999)
    decisions = run_filter(_rule(keep_share=0.3), [*off, on])
    kept = [d for d in decisions[:-1] if isinstance(d, Edit)]
    dropped = [d for d in decisions[:-1] if isinstance(d, Drop)]
    assert len(kept) + len(dropped) == 200 and 40 <= len(kept) <= 80
    assert dropped[0].reason == "rule reward_fns:off_topic picked it; beyond keep_share 0.3"
    assert decisions[-1] == KEEP  # records the rule does not pick are not sampled
    again = run_filter(_rule(keep_share=0.3), list(reversed(off)))  # by record, not by position
    assert sorted(d.record.id for d in again if isinstance(d, Edit)) == sorted(d.record.id for d in kept)
    answered = make_record("What are the rules of chess?", "A seed's answer.", row=0)
    assert run_filter(_rule(keep_share=0.01, replace=False), [answered])[0] == KEEP


def test_a_function_that_takes_fields_sees_the_seed_fields():
    r = make_record("Anything at all?", None, row=0)
    r.metadata["fields"] = {"topic": "off"}
    assert isinstance(run_filter(RuleAnswer(when="reward_fns:off_topic_by_field", answer="x"), [r])[0], Edit)


def test_a_missing_function_or_a_non_bool_verdict_is_a_clear_error():
    with pytest.raises(PluginError, match="cannot load rule-answer `when` function 'reward_fns:nope'"):
        RuleAnswer(when="reward_fns:nope", answer="x")
    with pytest.raises(TypeError, match="returned str, not a bool"):
        run_filter(RuleAnswer(when="reward_fns:not_a_bool", answer="x"), [make_record("q?", None, row=0)])


def test_in_a_pipeline_the_teacher_answers_only_what_the_rule_did_not(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"] = [
        {
            "kind": "filter",
            "name": "redirects",
            "filters": [{"plugin": "rule-answer", "options": {"when": "reward_fns:off_topic", "answer": REDIRECT}}],
        },
        {
            "kind": "generate",
            "name": "responses",
            "teacher": "writer",
            "task": {"plugin": "response", "options": {"answered": "keep"}},
        },
        {"kind": "export", "name": "sft", "format": "sft"},
    ]
    pipeline(cfg).run()
    off = {"What is the capital of France?", "Can you recommend a good pasta recipe?"}
    assert sum(EchoTeacher.calls) == len(QUESTIONS) - len(off)
    folder = tmp_path / "out" / "stages" / "responses"
    manifest = json.loads((folder / "manifest.json").read_text())
    records = list(read_shards(folder, [s["kept_file"] for s in manifest["shards"]]))
    assert len(records) == len(QUESTIONS)
    for r in records:
        question = r.prompt()[-1].content
        if question in off:
            assert r.response() == REDIRECT and not r.provenance.generators
            assert r.provenance.license.expression == "CC0-1.0"
            assert any(e.action == "edited" and e.plugin == "rule-answer" for e in r.provenance.events)
        else:
            assert r.response().startswith("Answer ") and r.provenance.generators[0].model == "echo-model"
