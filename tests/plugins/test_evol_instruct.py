"""Evol-Instruct: generations, the elimination rules, and a real run on the tiny model."""

from __future__ import annotations

import json
import random

import distill
from distill.filter import KEEP, Drop
from distill.records import Message
from distill.task import Proposal
from distill.teacher import Sample
from distill.testing import make_record, run_filter
from distill_plugins.tasks.evol_instruct import EvolElimination, EvolInstructTask


def _seeds(n: int):
    return [make_record(f"How do I fix my router number {i}?", None, row=i) for i in range(n)]


def _evolved(parent, generation: int, text: str):
    r = make_record(text, None, row=1000 + generation)
    r.metadata.update(generated_by="evolve", evol_generation=generation, evolved_from=parent.id)
    return r


def test_each_round_evolves_the_oldest_generation_first_and_stops_at_the_last():
    task = EvolInstructTask(num_instructions=10, generations=2)
    seeds = _seeds(3)
    first = task.propose(seeds, 5, random.Random(0))
    assert len(first) == 3  # each instruction is evolved once per generation
    assert sorted(p.parents[0].id for p in first) == sorted(s.id for s in seeds)
    assert all(p.metadata["evol_generation"] == 1 and p.metadata["evolved_from"] == p.parents[0].id for p in first)
    assert all(
        p.metadata["evol_method"] in ("constraints", "deepen", "concretize", "reasoning", "breadth") for p in first
    )

    gen1 = [_evolved(s, 1, f"How do I fix router {i} without a cable?") for i, s in enumerate(seeds[:2])]
    second = task.propose(seeds + gen1, 5, random.Random(1))
    # seeds[2] failed its evolution and is still in line, first; then generation 1
    assert [p.parents[0].id for p in second][0] == seeds[2].id
    assert {p.parents[0].id for p in second[1:]} == {g.id for g in gen1}
    gen2 = [_evolved(g, 2, f"Fix router {i} with two constraints?") for i, g in enumerate(gen1)]
    third = task.propose(seeds + gen1 + gen2, 5, random.Random(2))
    assert [p.parents[0].id for p in third] == [seeds[2].id]  # generation 2 is the last


def test_in_depth_and_in_breadth_prompts():
    task = EvolInstructTask(methods=["breadth"])
    (p,) = task.propose(_seeds(1), 1, random.Random(0))
    assert "#Given Prompt#" in p.messages[0].content and "more rare" in p.messages[0].content
    task = EvolInstructTask(methods=["constraints"])
    (p,) = task.propose(_seeds(1), 1, random.Random(0))
    assert "Add one more constraint" in p.messages[0].content
    assert "How do I fix my router number 0?" in p.messages[0].content


def _parse(task, parent_text: str, out: str, method: str = "constraints"):
    parent = make_record(parent_text, None, row=0)
    proposal = Proposal(
        messages=[Message(role="user", content="...")], parents=[parent], metadata={"evol_method": method}
    )
    return task.parse(proposal, Sample(text=out))


def test_elimination_rules_on_the_instruction():
    task = EvolInstructTask()
    q = "How do I reset my router?"
    ok = _parse(task, q, "#Rewritten Prompt#: How do I reset my router without losing my port forwarding rules?")
    assert ok == [[Message(role="user", content="How do I reset my router without losing my port forwarding rules?")]]
    assert _parse(task, q, "How do I reset my router, given prompt constraints?").reason == (
        "elimination rule 4: copied the rewriting prompt's words"
    )
    assert _parse(task, q, "How do I reset my router?").reason.startswith("elimination rule 1")
    assert _parse(task, q, "how do I RESET my router").reason.startswith("elimination rule 1")
    assert _parse(task, q, "   ").reason == "empty output"
    assert _parse(task, q, "word " * 301).reason == "too long: 301 words > 300"


def test_elimination_rules_on_the_answer():
    def answered(text):
        r = make_record("Q?", None, row=0)
        r.messages.append(Message(role="assistant", content=text))
        return r

    decisions = run_filter(
        EvolElimination(),
        [
            answered("Sorry, I cannot help with that."),
            answered("... the, of and!"),
            answered("Unplug it for ten seconds."),
            answered("sorry " + "word " * 90),
        ],
    )
    assert isinstance(decisions[0], Drop) and decisions[0].reason.startswith("elimination rule 2")
    assert isinstance(decisions[1], Drop) and decisions[1].reason.startswith("elimination rule 3")
    assert decisions[2] == KEEP and decisions[3] == KEEP


def test_a_run_on_the_tiny_model_loses_nothing_and_resumes_for_free(tmp_path, tiny_model_dir):
    (tmp_path / "seeds.jsonl").write_text(
        "".join(json.dumps({"prompt": f"How do I fix my {t}?"}) + "\n" for t in ("router", "modem", "Wi-Fi", "printer"))
    )
    cfg = {
        "output": "out",
        "seed": 5,
        "cache": {"path": "requests.sqlite"},
        "seeds": [{"path": "seeds.jsonl", "license": "CC0-1.0"}],
        "teachers": {"tiny": {"plugin": "transformers", "options": {"model": str(tiny_model_dir), "max_tokens": 24}}},
        "stages": [
            {
                "kind": "generate",
                "name": "evolve",
                "teacher": "tiny",
                "batch_size": 4,
                "task": {"plugin": "evol-instruct", "options": {"num_instructions": 6, "generations": 2}},
            },
            {"kind": "generate", "name": "answers", "teacher": "tiny", "task": "response"},
            {"kind": "filter", "name": "eliminate", "filters": ["evol-elimination"]},
        ],
    }
    run = distill.run(cfg, base_dir=tmp_path, progress=False, log=lambda m: None)
    counts = run.counts()
    evolve = counts["evolve"]
    assert evolve["in"] == 4 and evolve["kept"] + evolve["rejected"] == evolve["in"] + evolve["generated"]
    evolved = [r for r in run.records("evolve") if "evol_generation" in r.metadata]
    assert evolved, "the tiny model's rewrites include usable ones"
    ids = {r.id for r in run.records("evolve")}
    for r in evolved:
        assert r.metadata["evolved_from"] in ids and r.metadata["evol_generation"] in (1, 2)
        assert r.provenance.sources and r.provenance.generators  # the seed and the model that evolved it
    for r in run.records("evolve", "rejected"):
        assert r.provenance.events[-1].reason  # every rejection says why
    assert counts["eliminate"]["in"] == counts["answers"]["kept"]

    again = distill.run(cfg, base_dir=tmp_path, progress=False, log=lambda m: None)
    assert all(s.skipped for s in again.stages)
