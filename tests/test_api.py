"""`distill.run` from Python: the same engine, cache and resume as `distill run`."""

from __future__ import annotations

import asyncio
import json

import pytest
from fake_plugins import EchoTeacher, FakePlugins
from util import config_dict, dump

import distill
from distill.config.loader import Config
from distill.errors import ConfigError, StoreError


def _run(cfg, **kw):
    EchoTeacher.calls.clear()
    return distill.run(cfg, plugins=[FakePlugins()], progress=False, log=lambda m: None, **kw)


def test_a_dict_runs_and_a_second_call_resumes_without_teacher_calls(tmp_path):
    cfg = config_dict(tmp_path)
    run = _run(cfg)
    assert EchoTeacher.calls, "the first run asks the teacher"
    assert run.stage_names() == ["seeds", "instructions", "responses", "clean", "sft"]
    counts = run.counts()
    assert counts["clean"]["kept"] > 0 and counts["clean"]["in"] == counts["responses"]["kept"]
    sft = run.dataset("sft")
    assert sft.num_rows == counts["clean"]["kept"]
    assert sft[0]["messages"][-1]["role"] == "assistant"
    kept = list(run.records("clean"))
    assert all(r.provenance.license.expression and r.provenance.sources for r in kept)
    as_rows = run.dataset("clean")  # a stage that is not an export: its records, one per row
    assert as_rows.num_rows == len(kept) and as_rows["id"] == [r.id for r in kept]
    assert json.loads(as_rows[0]["provenance"])["sources"][0]["dataset"] == "acme-seeds"
    assert as_rows[0]["license"] == kept[0].provenance.license.expression

    again = _run(cfg)
    assert EchoTeacher.calls == []
    assert all(s.skipped for s in again.stages)
    assert again.dataset("sft")["messages"] == sft["messages"]


def test_the_same_config_from_yaml_a_dict_and_a_config_object(tmp_path):
    cfg = config_dict(tmp_path)
    from_yaml = distill.run(dump(tmp_path, cfg), plugins=[FakePlugins()], progress=False, log=lambda m: None)
    EchoTeacher.calls.clear()
    obj = Config.model_validate(cfg)
    from_object = _run(obj)
    assert EchoTeacher.calls == []  # same output folder: the object resumed the YAML's run
    assert from_object.output == from_yaml.output
    assert from_object.counts() == from_yaml.counts()


def test_relative_paths_in_a_dict_resolve_against_base_dir(tmp_path, monkeypatch):
    cfg = config_dict(tmp_path, output="out-rel", cache={"path": "requests.sqlite"})
    cfg["seeds"][0]["path"] = "seeds.jsonl"
    monkeypatch.chdir(tmp_path.parent)
    run = _run(cfg, base_dir=tmp_path)
    assert run.output == tmp_path / "out-rel"
    assert (tmp_path / "requests.sqlite").is_file()


def test_runs_from_inside_a_running_event_loop_with_the_real_api_client(tmp_path):
    """Jupyter runs cells inside an event loop: a blocking call there, with the `openai`
    teacher (the real client, which runs its own loop) against a local server, must work."""
    from servers import StubUpstream

    with StubUpstream(latency=0.01) as upstream:
        cfg = config_dict(tmp_path)
        cfg["teachers"] = {
            "writer": {"plugin": "openai", "options": {"model": "distill-tiny", "base_url": upstream.base_url}}
        }
        cfg["stages"] = cfg["stages"][1:]  # answers to the seed questions only

        async def cell():
            return _run(cfg)

        run = asyncio.run(cell())
        assert upstream.answered == run.counts()["responses"]["in"] > 0
        assert run.dataset("sft").num_rows == run.counts()["clean"]["kept"] > 0


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ConfigError, match="a config is a path, a dict or a distill Config, got int"):
        distill.run(3)  # type: ignore[arg-type]
    cfg = config_dict(tmp_path)
    cfg["stages"][0]["batch_size"] = "many"
    with pytest.raises(ConfigError, match=r"stages\[0\].*batch_size"):
        _run(cfg)
    run = _run(config_dict(tmp_path))
    with pytest.raises(
        StoreError, match=r"no stage or export named 'nope'.*stages: seeds, instructions, responses, clean, sft"
    ):
        run.dataset("nope")
    with pytest.raises(StoreError, match="not a run's output folder"):
        distill.Run.open(tmp_path)


def test_open_audit_and_report_a_finished_run(tmp_path):
    made = _run(config_dict(tmp_path))
    run = distill.Run.open(made.output)
    assert run.counts() == made.counts()
    reports = run.audit(use="research")
    assert len(reports) == 1 and reports[0].verdict in ("cleared", "needs-ack", "blocked")
    assert json.loads((made.output / "run.json").read_text())  # the run was recorded as by the command
    assert run.report().is_file()


def test_generate_from_rows_twice_pays_once(tmp_path):
    """The notebook case: rows in memory, one generate stage, called again on the same output."""
    rows = [
        {"question": "How do I reset my router?", "topic": "on"},
        {"question": "Why is my Wi-Fi slow?", "topic": "on"},
    ]
    kw = dict(
        teacher={"plugin": "echo", "options": {"n": 2}},
        output=tmp_path / "gen",
        license="CC0-1.0",
        cache=tmp_path / "requests.sqlite",
    )
    EchoTeacher.calls.clear()
    first = distill.generate(rows, plugins=[FakePlugins()], progress=False, log=lambda m: None, **kw)
    assert sum(EchoTeacher.calls) == 2 and first.num_rows == 2
    assert first[0]["license"] == "CC0-1.0 AND Apache-2.0"  # the rows' terms and the teacher's
    prov = json.loads(first[0]["provenance"])
    assert prov["sources"][0] == {"dataset": "input", "row": 1, "license": "CC0-1.0"}  # line 1
    assert [g["model"] for g in prov["generators"]]
    EchoTeacher.calls.clear()
    again = distill.generate(rows, plugins=[FakePlugins()], progress=False, log=lambda m: None, **kw)
    assert EchoTeacher.calls == []
    assert again["messages"] == first["messages"] and again["id"] == first["id"]
    with pytest.raises(ConfigError, match="has no rows"):
        distill.generate([], **kw)


def test_generate_takes_a_dataset_and_a_real_teacher(tmp_path):
    """A `datasets.Dataset` in, the `openai` teacher (real client) against a local server; the
    second call is answered from the cache: the server sees no new request."""
    datasets = pytest.importorskip("datasets")
    from servers import StubUpstream

    data = datasets.Dataset.from_list([{"prompt": f"Question {i}?"} for i in range(5)])
    with StubUpstream(latency=0.01) as upstream:
        kw = dict(
            teacher={"plugin": "openai", "options": {"model": "distill-tiny", "base_url": upstream.base_url}},
            output=tmp_path / "gen",
            cache=tmp_path / "requests.sqlite",
            license="MIT",
            progress=False,
            log=lambda m: None,
        )
        first = distill.generate(data, **kw)
        assert upstream.answered == 5 and first.num_rows == 5
        assert all(m[-1]["role"] == "assistant" for m in first["messages"])
        distill.generate(data, **kw)
        assert upstream.answered == 5
