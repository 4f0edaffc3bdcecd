"""The `review` stage: decisions applied to the records, read by the stages after it."""

from __future__ import annotations

import json

import datasets
import pytest
from review_run import decide, ranked_fixture, with_review  # noqa: F401 (the `ranked` fixture)
from util import pipeline

from distill.api import Run
from distill.review.decisions import Decision, DecisionLog, decisions_path
from distill.stages.review import ReviewPending


def records(out, stage, which="kept"):
    return list(Run.open(out).records(stage, which))


def test_choices_rankings_rejections_and_edits_reach_the_exports(ranked):
    cfg, out = ranked
    before = records(out, "ranked")
    assert len(before) >= 4 and all(len(r.candidates) == 3 for r in before)
    a, b, c, e = before[:4]
    # The reward function prefers short answers: candidate 0 (shortest) is the model's best;
    # the human picks otherwise.
    decide(out, a.id, "ann", "choose", candidate=2)
    decide(out, a.id, "ann", "accept")
    decide(out, b.id, "ann", "rank", ranking=[1, 2, 0])
    decide(out, c.id, "ann", "reject", reason="answers the wrong question")
    decide(out, e.id, "ann", "edit", candidate=0, text="A human-written answer.")
    decide(out, e.id, "ann", "choose", candidate=0)

    pipeline(with_review(cfg, license="CC-BY-4.0")).run()
    kept = {r.id: r for r in records(out, "reviewed")}
    dropped = {r.id: r for r in records(out, "reviewed", "rejected")}
    assert (
        set(dropped) == {c.id}
        and "rejected by ann: answers the wrong question" in dropped[c.id].provenance.events[-1].reason
    )
    assert len(kept) == len(before) - 1  # unreviewed records kept (`unreviewed: keep`)

    ra = kept[a.id]
    assert ra.messages[-1].content == a.candidates[2].content
    assert ra.metadata["review"]["model_scores"] == [x.score for x in a.candidates]
    humans = [g for g in ra.provenance.generators if g.plugin == "human"]
    assert [(g.role, g.model, g.license) for g in humans] == [("judge", "human:ann", "CC-BY-4.0")]
    assert "CC-BY-4.0" in ra.provenance.license.expression

    re_ = kept[e.id]
    assert (
        re_.candidates[0].content == "A human-written answer." and re_.messages[-1].content == "A human-written answer."
    )
    editor = re_.provenance.generators[re_.candidates[0].generator]
    assert (editor.role, editor.model) == ("editor", "human:ann")
    assert any(ev.action == "edited" and ev.reason == "candidate 1 edited by ann" for ev in re_.provenance.events)

    prefs = datasets.load_from_disk(str(out / "export" / "prefs"))
    pairs = {
        row["prompt"][-1]["content"]: (row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in prefs
    }
    question = lambda r: r.prompt()[-1].content  # noqa: E731
    assert pairs[question(a)] == (a.candidates[2].content, a.candidates[1].content)  # human best vs model's worst
    assert pairs[question(b)] == (b.candidates[1].content, b.candidates[0].content)  # the human's full order
    assert question(c) not in pairs

    stats = json.loads((out / "stages" / "reviewed" / "manifest.json").read_text())["stats"]
    assert stats["review"]["decisions"] == 6 and stats["review"]["unreviewed"] == len(before) - 4


def test_more_decisions_redo_the_review_stage_only(ranked):
    cfg, out = ranked
    first = records(out, "ranked")[0]
    pipeline(with_review(cfg)).run()
    decide(out, first.id, "ann", "reject", reason="too vague")
    logs: list[str] = []
    p = pipeline(with_review(cfg))
    p.log = logs.append
    result = p.run()
    skipped = {s.stage: s.skipped for s in result.stages}
    assert skipped["ranked"] and skipped["responses"] and not skipped["reviewed"] and not skipped["prefs"]
    assert first.id in {r.id for r in records(out, "reviewed", "rejected")}


def test_disagreement_drops_or_follows_the_latest(ranked):
    cfg, out = ranked
    r = records(out, "ranked")[0]
    decide(out, r.id, "ann", "accept")
    decide(out, r.id, "bob", "reject", reason="rude")
    pipeline(with_review(cfg)).run()
    (dropped,) = records(out, "reviewed", "rejected")
    assert dropped.provenance.events[-1].reason == "reviewers disagree: ann accept, bob reject (rude)"
    pipeline(with_review(cfg, conflicts="latest")).run()
    assert r.id in {x.id for x in records(out, "reviewed", "rejected")}  # bob decided last
    pipeline(with_review(cfg, reviewers=["ann"])).run()
    assert not records(out, "reviewed", "rejected")


def test_wait_names_what_is_left_and_drop_drops_the_unreviewed(ranked):
    cfg, out = ranked
    total = len(records(out, "ranked"))
    with pytest.raises(ReviewPending, match=rf"{total} of {total} records of stage 'ranked' have no decision yet"):
        pipeline(with_review(cfg, unreviewed="wait")).run()
    pipeline(with_review(cfg, unreviewed="drop")).run()
    assert not records(out, "reviewed") and len(records(out, "reviewed", "rejected")) == total


def test_a_record_the_pipeline_dropped_comes_back_when_accepted(ranked, tmp_path):
    cfg, out = ranked
    cfg = dict(cfg)
    cfg["stages"] = [
        *cfg["stages"],
        {"kind": "filter", "name": "short", "filters": [{"plugin": "length", "options": {"max_words": 3}}]},
    ]
    pipeline(cfg).run()
    gone = records(out, "short", "rejected")
    assert gone
    DecisionLog(decisions_path(out, "short")).append(
        Decision(id="rescue-0001", record=gone[0].id, reviewer="ann", action="accept")
    )
    pipeline(with_review(cfg)).run()
    back = {r.id: r for r in records(out, "reviewed")}
    assert gone[0].id in back and back[gone[0].id].provenance.events[-1].reason == "accept by ann"
