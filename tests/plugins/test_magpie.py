"""Magpie: instructions written by the model from an empty user turn, with no seeds."""

from __future__ import annotations

import random

import pytest

import distill
from distill.errors import PluginError
from distill.records import Message
from distill.task import Proposal
from distill.teacher import ChatRequest, Sample
from distill.testing import make_record
from distill_plugins.tasks.magpie import MagpieTask


def test_proposals_are_an_empty_user_turn_to_continue():
    task = MagpieTask(system_prompt="You are the help desk of a Wi-Fi router.")
    props = task.propose([], 3, random.Random(0))
    assert len(props) == 3 and all(p.continue_final for p in props)
    assert [m.role for m in props[0].messages] == ["system", "user"] and props[0].messages[-1].content == ""
    assert [m.role for m in MagpieTask().propose([], 1, random.Random(0))[0].messages] == ["user"]


def test_parse_and_accept():
    task = MagpieTask(min_words=3, max_words=10)
    p = Proposal(messages=[Message(role="user", content="")])
    assert task.parse(p, Sample(text=" How do I reset my router? ")) == [
        [Message(role="user", content="How do I reset my router?")]
    ]
    assert task.parse(p, Sample(text="")).reason == "empty output"
    assert task.parse(p, Sample(text="Hi there")).reason == "too short: 2 words < 3"
    assert task.parse(p, Sample(text="word " * 11)).reason == "too long: 11 words > 10"
    assert task.parse(p, Sample(text="How do I reset my", finish_reason="length")).reason.startswith("cut off")
    pool = [make_record("How do I reset my router?", None, row=0)]
    assert task.accept(pool, [Message(role="user", content="how do I reset my router")]).reason.startswith("duplicate")
    assert task.accept(pool, [Message(role="user", content="How do I update it?")]) is None


def test_an_api_teacher_refuses_to_write_a_user_turn():
    from distill_plugins.teachers.openai import OpenAITeacher

    teacher = OpenAITeacher(model="m", base_url="http://127.0.0.1:9/v1")
    req = ChatRequest(messages=[Message(role="user", content="")], continue_final=True)
    with pytest.raises(PluginError, match="needs the model's chat template"):
        teacher.generate([req])


def test_a_run_with_no_seeds_on_the_tiny_model(tmp_path, tiny_model_dir):
    cfg = {
        "output": "out",
        "seed": 1,
        "cache": {"path": "requests.sqlite"},
        "teachers": {
            "tiny": {
                "plugin": "transformers",
                "options": {"model": str(tiny_model_dir), "max_tokens": 16, "temperature": 1.0},
            }
        },
        "stages": [
            {
                "kind": "generate",
                "name": "instructions",
                "teacher": "tiny",
                "batch_size": 4,
                "task": {"plugin": "magpie", "options": {"num_instructions": 4, "min_words": 1, "max_words": 100}},
            },
            {"kind": "generate", "name": "answers", "teacher": "tiny", "task": "response"},
        ],
    }
    run = distill.run(cfg, base_dir=tmp_path, progress=False, log=lambda m: None)
    counts = run.counts()
    assert counts["seeds"]["kept"] == 0
    made = counts["instructions"]
    assert made["kept"] + made["rejected"] == made["generated"] > 0
    for r in run.records("instructions"):
        assert [m.role for m in r.messages] == ["user"] and r.messages[0].content
        assert r.provenance.generators and r.provenance.generators[0].model  # the model wrote the user turn
    for r in run.records("instructions", "rejected"):
        assert r.provenance.events[-1].reason
    assert counts["answers"]["in"] == made["kept"]
    again = distill.run(cfg, base_dir=tmp_path, progress=False, log=lambda m: None)
    assert all(s.skipped for s in again.stages)
