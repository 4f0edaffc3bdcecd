"""The runner's guarantees, checked with a deterministic in-process teacher."""

from __future__ import annotations

import json

import pytest
from fake_plugins import BrokenObserver, EchoTeacher, Recorder
from util import config_dict, pipeline

from distill.errors import ConfigError, PluginError
from distill.io.inspect import inspect_output
from distill.io.store import read_shards

STAGES = ["seeds", "instructions", "responses", "clean", "sft"]


def _records(out, stage):
    d = out / "stages" / stage
    m = json.loads((d / "manifest.json").read_text())
    kept = list(read_shards(d, [s["kept_file"] for s in m["shards"]]))
    rejected = list(read_shards(d, [s["rejected_file"] for s in m["shards"]]))
    return kept, rejected


def test_full_run_accounts_for_every_record(tmp_path):
    result = pipeline(config_dict(tmp_path)).run()
    out = tmp_path / "out"
    assert [s.stage for s in result.stages] == STAGES
    reports = {r.stage: r for r in inspect_output(out)}
    assert list(reports) == STAGES
    previous_kept = None
    for name in STAGES:
        r = reports[name]
        t = r.totals
        assert r.complete and r.balanced
        assert t["in"] + t["generated"] == t["kept"] + t["rejected"]
        if previous_kept is not None:
            assert t["in"] == previous_kept, name  # each stage reads the last one's kept records
        previous_kept = t["kept"]
        kept, rejected = _records(out, name)
        assert len(kept) == t["kept"] and len(rejected) == t["rejected"]
        assert len({r.id for r in kept}) == len(kept)  # no duplicates
        for rec in rejected:
            assert rec.provenance.events[-1].action == "dropped" and rec.provenance.events[-1].reason
    assert reports["instructions"].totals["generated"] >= 4
    kept, _ = _records(out, "sft")
    assert kept
    for rec in kept:
        p = rec.provenance
        assert p.sources and all(s.dataset == "acme-seeds" and s.license == "CC0-1.0" for s in p.sources)
        assert any(g.model == "echo-model" and g.license == "Apache-2.0" for g in p.generators)
        assert p.license.expression == "CC0-1.0 AND Apache-2.0"
        assert p.license.use == "commercial" and p.license.attribution
        assert [e.stage for e in p.events][0] in ("seeds", "instructions")
        assert rec.messages[-1].role == "assistant"
        assert all(m.role != "system" for m in rec.messages)  # teacher's prompt is not kept
        assert len(rec.candidates) == 2


def test_rerun_is_cached_and_makes_no_teacher_calls(tmp_path):
    cfg = config_dict(tmp_path)
    pipeline(cfg).run()
    assert EchoTeacher.calls
    again = pipeline(cfg).run()
    assert EchoTeacher.calls == []
    assert all(s.skipped for s in again.stages)


def test_changing_a_later_stage_redoes_only_that_stage(tmp_path):
    cfg = config_dict(tmp_path)
    pipeline(cfg).run()
    before, _ = _records(tmp_path / "out", "responses")
    cfg["stages"][2]["filters"][0]["options"]["min_words"] = 4
    result = pipeline(cfg).run()
    assert EchoTeacher.calls == []
    assert {s.stage: s.skipped for s in result.stages} == {
        "seeds": True,
        "instructions": True,
        "responses": True,
        "clean": False,
        "sft": False,
    }
    after, _ = _records(tmp_path / "out", "responses")
    assert [r.id for r in after] == [r.id for r in before]
    stale = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "out" / "stale").iterdir())
    assert stale == ["clean", "sft"]


def test_teacher_crash_is_named_keeps_committed_work_and_resumes_without_duplicates(tmp_path):
    reference_dir = tmp_path / "ref"
    reference_dir.mkdir()
    pipeline(config_dict(reference_dir)).run()
    ref, _ = _records(reference_dir / "out", "responses")

    cfg = config_dict(tmp_path)
    EchoTeacher.crash_at = 4  # 2 self-instruct rounds, 1 response batch, then the crash
    try:
        with pytest.raises(PluginError, match="teacher plugin 'echo' failed on batch 1 of stage 'responses'"):
            pipeline(cfg).run()
    finally:
        EchoTeacher.crash_at = None
    committed = json.loads((tmp_path / "out/stages/responses/manifest.json").read_text())
    assert len(committed["shards"]) == 1 and not committed["complete"]

    pipeline(cfg).run()
    assert sum(EchoTeacher.calls) == len(ref) - 3  # only the batches not yet committed
    got, _ = _records(tmp_path / "out", "responses")
    assert [r.id for r in got] == [r.id for r in ref]
    assert [r.messages[-1].content for r in got] == [r.messages[-1].content for r in ref]


def test_filter_crash_is_named(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"][2]["filters"].append("crashing")
    with pytest.raises(
        PluginError,
        match="filter plugin 'crashing' failed in filter_batch on batch 0 of stage "
        "'clean' \\(records .*\\): ValueError: boom",
    ):
        pipeline(cfg).run()
    assert (tmp_path / "out/stages/responses/manifest.json").exists()


def test_observers_get_batches_and_a_broken_observer_does_not_stop_the_run(tmp_path, capsys):
    rec = Recorder()
    pipeline(config_dict(tmp_path), ("recorder", rec), ("broken", BrokenObserver())).run()
    assert [s for s, _ in rec.finished] == STAGES
    assert ("instructions", 4) in rec.generated or sum(n for s, n in rec.generated if s == "instructions") >= 4
    assert "observer plugin 'broken' failed in stage_finished" in capsys.readouterr().err


def test_until_stops_before_a_stage(tmp_path):
    result = pipeline(config_dict(tmp_path)).run(until="clean")
    assert [s.stage for s in result.stages] == ["seeds", "instructions", "responses"]
    with pytest.raises(ConfigError, match="no stage named 'nope'"):
        pipeline(config_dict(tmp_path)).run(until="nope")


def test_malformed_seed_lines_are_rejected_and_the_rest_proceeds(tmp_path):
    cfg = config_dict(tmp_path)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(seeds.read_text() + "{not json\n" + json.dumps({"other": 1}) + "\n")
    pipeline(cfg).run()
    kept, rejected = _records(tmp_path / "out", "seeds")
    assert len(kept) == 6 and len(rejected) == 2
    reasons = [r.provenance.events[-1].reason for r in rejected]
    assert reasons[0].startswith("line 7") and reasons[1].startswith("line 8")


def test_seed_without_license_is_unspecified_and_warns(tmp_path):
    cfg = config_dict(tmp_path)
    del cfg["seeds"][0]["license"]
    result = pipeline(cfg).run(until="instructions")
    assert any("license" in w for w in result.warnings)
    kept, _ = _records(tmp_path / "out", "seeds")
    assert all(r.provenance.license.use == "unspecified" for r in kept)


def test_a_redone_stage_with_the_same_requests_is_answered_from_the_cache(tmp_path):
    cfg = config_dict(tmp_path)
    pipeline(cfg).run()
    first, _ = _records(tmp_path / "out", "responses")
    cfg["stages"][1]["batch_size"] = 5  # redoes the stage, but every request is the same
    result = pipeline(cfg).run()
    assert {s.stage: s.skipped for s in result.stages}["responses"] is False
    assert EchoTeacher.calls == []  # zero teacher calls
    again, _ = _records(tmp_path / "out", "responses")
    assert [r.messages for r in again] == [r.messages for r in first]
    m = json.loads((tmp_path / "out/stages/responses/manifest.json").read_text())
    assert m["stats"]["calls"]["cache_hits"] == m["stats"]["calls"]["requests"] == len(first)
    assert m["stats"]["calls"]["teacher_calls"] == 0


def test_with_the_cache_off_every_request_reaches_the_teacher(tmp_path):
    cfg = config_dict(tmp_path, cache={"enabled": False})
    pipeline(cfg).run()
    cfg["stages"][1]["batch_size"] = 5
    pipeline(cfg).run()
    assert sum(EchoTeacher.calls) > 0
    assert not (tmp_path / "requests.sqlite").exists()


def test_plugins_get_a_state_folder_in_the_output_that_survives_resume(tmp_path):
    p = pipeline(config_dict(tmp_path))
    p.run()
    teacher = p.context.teachers["writer"]
    assert teacher.context.state_dir == tmp_path / "out" / "state" / "teachers.writer"


def test_a_changed_environment_value_redoes_the_stages_it_feeds_but_a_secret_does_not_show(tmp_path, monkeypatch):
    """Digests resolve `${VAR}`: a model name moved to the environment and changed there must not
    leave the old model's records looking current. Secret-named variables stay placeholders."""
    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"]["style"] = "${WRITER_STYLE:-answer}"
    cfg["teachers"]["writer"]["options"]["api_key"] = "${ECHO_API_KEY}"
    monkeypatch.setenv("ECHO_API_KEY", "sk-first-canary-1234")
    first = {s.stage: s.skipped for s in pipeline(cfg).run().stages}
    monkeypatch.setenv("ECHO_API_KEY", "sk-second-canary-5678")  # a rotated key changes nothing
    assert all(s.skipped for s in pipeline(cfg).run().stages)
    monkeypatch.setenv("WRITER_STYLE", "judge")
    again = {s.stage: s.skipped for s in pipeline(cfg).run().stages}
    assert not any(first.values())
    assert again == {"seeds": True, "instructions": True, "responses": False, "clean": False, "sft": False}
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file():
            assert b"canary" not in f.read_bytes(), f
