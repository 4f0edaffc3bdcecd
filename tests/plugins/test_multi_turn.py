"""Multi-turn conversations: `user-turn` stages (a teacher playing the user) between `response`
stages, each turn's writer in provenance."""

from __future__ import annotations

import json

import distill
from distill.records import Message
from distill.task import PassThrough, Reject
from distill.teacher import Sample
from distill.testing import make_record
from distill_plugins.tasks.multi_turn import PERSONA, UserTurnTask


def _answered(*turns: str):
    r = make_record(turns[0], None, row=0)
    r.messages = [Message(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(turns)]
    return r


def test_the_user_simulator_sees_the_conversation_with_roles_swapped():
    task = UserTurnTask()
    built = task.build(_answered("How do I reset my router?", "Hold the button for ten seconds."))
    assert [(m.role, m.content) for m in built] == [
        ("system", PERSONA),
        ("assistant", "How do I reset my router?"),
        ("user", "Hold the button for ten seconds."),
    ]
    assert isinstance(task.build(make_record("Only a question?", None, row=0)), Reject)
    two = _answered("Q1?", "A1.", "Q2?", "A2.")
    assert isinstance(UserTurnTask(max_turns=2).build(two), PassThrough)
    assert isinstance(UserTurnTask(max_turns=3).build(two), list)


def test_apply_appends_the_user_turn_and_notes_its_writer():
    task = UserTurnTask(min_words=2)
    r = task.apply(_answered("Q1?", "A1."), [Sample(text=" And how do I update it? ")], generator=1)
    assert [m.role for m in r.messages] == ["user", "assistant", "user"]
    assert r.messages[-1].content == "And how do I update it?"
    assert r.metadata["turns"] == [{"message": 2, "role": "user", "generator": 1}]
    assert task.apply(_answered("Q1?", "A1."), [Sample(text="Ok")], generator=1).reason.startswith(
        "user message too short"
    )
    assert task.apply(_answered("Q1?", "A1."), [Sample(text="  ")], generator=1).reason == "empty user message"


def test_a_three_turn_conversation_on_the_tiny_model(tmp_path, tiny_model_dir):
    (tmp_path / "seeds.jsonl").write_text(
        "".join(json.dumps({"prompt": f"How do I fix my {t}?"}) + "\n" for t in ("router", "modem", "printer"))
    )
    model = str(tiny_model_dir)
    answer = {"kind": "generate", "teacher": "assistant", "task": "response"}
    follow = {"kind": "generate", "teacher": "user", "task": {"plugin": "user-turn", "options": {"min_words": 1}}}
    cfg = {
        "output": "out",
        "seed": 2,
        "cache": {"path": "requests.sqlite"},
        "seeds": [{"path": "seeds.jsonl", "license": "CC0-1.0"}],
        "teachers": {
            "assistant": {"plugin": "transformers", "options": {"model": model, "max_tokens": 12, "temperature": 0.5}},
            "user": {"plugin": "transformers", "options": {"model": model, "max_tokens": 12, "temperature": 1.0}},
        },
        "stages": [
            {**answer, "name": "turn-1"},
            {**follow, "name": "user-2"},
            {**answer, "name": "turn-2"},
            {**follow, "name": "user-3"},
            {**answer, "name": "turn-3"},
        ],
    }
    run = distill.run(cfg, base_dir=tmp_path, progress=False, log=lambda m: None)
    done = list(run.records("turn-3"))
    assert done and len(done) + sum(c["rejected"] for c in run.counts().values()) == 3
    for r in done:
        assert [m.role for m in r.messages] == ["user", "assistant"] * 3
        turns = r.metadata["turns"]
        assert [(t["message"], t["role"]) for t in turns] == [
            (2, "user"),
            (3, "assistant"),
            (4, "user"),
            (5, "assistant"),
        ]
        writers = {t["role"]: r.provenance.generators[t["generator"]] for t in turns}
        assert writers["user"].sampling["temperature"] == 1.0 and writers["assistant"].sampling["temperature"] == 0.5
        assert [e.stage for e in r.provenance.events if e.action == "generated"] == [
            "turn-1",
            "user-2",
            "turn-2",
            "user-3",
            "turn-3",
        ]
