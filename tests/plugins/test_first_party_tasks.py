"""The response and self-instruct tasks on hand-built samples."""

from __future__ import annotations

import random

from distill.records import Message
from distill.task import PassThrough, Proposal, Reject
from distill.teacher import Sample
from distill.testing import make_record
from distill_plugins.tasks import ResponseTask, SelfInstructTask


def test_response_task_sends_the_system_prompt_but_does_not_keep_it():
    t = ResponseTask(system_prompt="Be brief.")
    rec = make_record("How do I reset it?", "old answer")
    sent = t.build(rec)
    assert [m.role for m in sent] == ["system", "user"] and sent[0].content == "Be brief."
    out = t.apply(
        rec,
        [
            Sample(text="  Hold the button. ", finish_reason="stop"),
            Sample(text="", finish_reason="stop"),
            Sample(text="Unplug it.", finish_reason="length"),
        ],
        0,
    )
    assert [m.role for m in out.messages] == ["user", "assistant"]
    assert out.messages[-1].content == "Hold the button."
    assert [c.content for c in out.candidates] == ["Hold the button.", "Unplug it."]
    assert all(c.generator == 0 for c in out.candidates)
    kept = ResponseTask(system_prompt="S", keep_system_prompt=True).apply(make_record("q"), [Sample(text="a")], 0)
    assert [m.role for m in kept.messages] == ["system", "user", "assistant"]


def test_response_task_rejections():
    t = ResponseTask()
    assert t.build(make_record("   ")) == Reject("no user message to answer")
    assert t.apply(make_record("q"), [Sample(text=" "), Sample(text="")], 0) == Reject("empty response")


def test_response_task_prefix_is_continued_and_kept_once():
    t = ResponseTask(system_prompt="S", prefix="Acme Support:")
    rec = make_record("How do I reset it?")
    sent = t.build(rec)
    assert [(m.role, m.content) for m in sent][-1] == ("assistant", "Acme Support:")
    out = t.apply(
        rec,
        [
            Sample(text=" Hold the button."),
            Sample(text="Acme Support: Unplug it."),
            Sample(text="Press reset."),
            Sample(text="  "),
        ],
        0,
    )
    # continued, echoed by the engine, glued without a space, empty continuation dropped
    assert [c.content for c in out.candidates] == [
        "Acme Support: Hold the button.",
        "Acme Support: Unplug it.",
        "Acme Support: Press reset.",
    ]
    assert [m.role for m in out.messages] == ["user", "assistant"]  # the prefix is the answer's, not a turn
    assert t.apply(make_record("q"), [Sample(text=" ")], 0) == Reject("empty response")


def test_response_task_keeps_answers_it_is_told_to_keep():
    keep = ResponseTask(answered="keep")
    assert keep.build(make_record("q", "a seed answer")) == PassThrough("already answered (answered: keep)")
    assert isinstance(keep.build(make_record("q")), list)  # unanswered ones still go to the teacher
    assert isinstance(ResponseTask().build(make_record("q", "a seed answer")), list)


def test_self_instruct_prompts_mix_seed_and_generated_examples():
    t = SelfInstructTask(seed_examples=2, generated_examples=1)
    seeds = [make_record(f"Seed question number {i}?", row=i) for i in range(5)]
    made = make_record("A generated question here?")
    made.metadata["generated_by"] = "questions"
    props = t.propose(seeds + [made], 3, random.Random(0))
    assert len(props) == 3
    for p in props:
        assert len(p.parents) == 3 and sum("generated_by" in r.metadata for r in p.parents) == 1
        assert "A generated question here?" in p.messages[0].content
    again = t.propose(seeds + [made], 3, random.Random(0))
    assert [p.messages for p in again] == [p.messages for p in props]  # deterministic per round


def test_self_instruct_parsing():
    t = SelfInstructTask(per_prompt=2, min_words=3)
    parent = make_record("How do I reset my router?")
    p = Proposal(messages=[Message(role="user", content="x")], parents=[parent])
    got = t.parse(
        p, Sample(text="Sure! Here are some:\n1. How do I change my Wi-Fi name?\n2) Question: Why is it slow?")
    )
    assert [c[0].content for c in got] == ["How do I change my Wi-Fi name?", "Why is it slow?"]
    assert (
        t.parse(p, Sample(text="How can I see connected devices?\nMore text"))[0][0].content
        == "How can I see connected devices?"
    )
    assert (
        t.parse(p, Sample(text="Here is a new request:\nHow can I hide my network name?"))[0][0].content
        == "How can I hide my network name?"
    )
    assert t.parse(p, Sample(text="")) == Reject("empty output")
    assert t.parse(p, Sample(text="Here's a revised version of the requests:")) == Reject(
        "no instruction found: only preamble lines"
    )
    assert t.parse(p, Sample(text="1. Ok")) == Reject("too short: 1 words < 3")
    assert t.parse(p, Sample(text="1. how do I reset my router")) == Reject("copied a few-shot example")
    assert t.accept([parent], [Message(role="user", content="HOW do I reset my router!")]) == Reject(
        "duplicate: same instruction already in the pool"
    )
