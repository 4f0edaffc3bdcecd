"""Ranking: scores written to candidates, the best answer promoted, pairs derived."""

from __future__ import annotations

import json

import pytest
from util import config_dict, pipeline

from distill.errors import ConfigError, PluginError
from distill.io.store import read_shards
from distill.testing import make_record
from distill_plugins.rankers import JudgeRanker, RewardFunctionRanker


def _kept(out, stage):
    d = out / "stages" / stage
    m = json.loads((d / "manifest.json").read_text())
    return list(read_shards(d, [s["kept_file"] for s in m["shards"]])), m


def _with_rank(tmp_path, ranker, teacher=None, export="preference"):
    cfg = config_dict(tmp_path)
    rank = {"kind": "rank", "name": "rank", "ranker": ranker}
    if teacher:
        rank["teacher"] = teacher
        cfg["teachers"][teacher] = {
            "plugin": "echo",
            "options": {"style": "judge", "temperature": 0.0, "license": "LicenseRef-Llama-3.1"},
        }
    cfg["stages"].insert(2, rank)
    cfg["stages"][-1]["format"] = export
    return cfg


def test_reward_function_scores_candidates_promotes_the_best_and_derives_pairs(tmp_path):
    cfg = _with_rank(
        tmp_path,
        {"plugin": "reward-function", "options": {"function": "reward_fns:prefers_short", "kwargs": {"penalty": 2}}},
    )
    pipeline(cfg).run()
    ranked, manifest = _kept(tmp_path / "out", "rank")
    assert ranked and manifest["complete"]
    for r in ranked:
        scores = [c.score for c in r.candidates]
        assert scores == [-2.0 * len(c.content) for c in r.candidates]
        best = max(r.candidates, key=lambda c: c.score)
        assert r.messages[-1].content == best.content
        assert r.provenance.events[-1].action == "ranked" and r.provenance.events[-1].plugin == "reward-function"
    exported, _ = _kept(tmp_path / "out", "sft")
    with_pairs = [r for r in ranked if r.preference() is not None]
    assert len(exported) == len(with_pairs) > 0
    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "out" / "export" / "sft"))
    assert set(ds.column_names) >= {"prompt", "chosen", "rejected"}
    assert ds[0]["chosen"][0]["content"] != ds[0]["rejected"][0]["content"]


@pytest.mark.parametrize("mode", ["score", "pairwise"])
def test_judge_ranker_records_the_judge_in_provenance(tmp_path, mode):
    cfg = _with_rank(tmp_path, {"plugin": "judge", "options": {"mode": mode}}, teacher="judge")
    pipeline(cfg).run()
    ranked, manifest = _kept(tmp_path / "out", "rank")
    assert ranked
    for r in ranked:
        judges = [g for g in r.provenance.generators if g.role == "judge"]
        assert [g.license for g in judges] == ["LicenseRef-Llama-3.1"]
        assert "LicenseRef-Llama-3.1" in r.provenance.license.expression  # the judge's terms count too
        longest = max(r.candidates, key=lambda c: len(c.content))
        if len({len(c.content) for c in r.candidates}) > 1:
            assert r.messages[-1].content == longest.content
    calls = sum(s["meta"]["requests"] for s in manifest["shards"])
    per_record = 2 if mode == "score" else 2  # 2 candidates: 2 scores, or A/B and B/A
    assert calls == per_record * len(ranked)


def test_unparseable_judge_output_rejects_the_record_with_a_reason(tmp_path):
    cfg = _with_rank(tmp_path, {"plugin": "judge"}, teacher="judge")
    cfg["teachers"]["judge"]["options"]["style"] = "answer"  # not JSON, no number in range
    pipeline(cfg).run()
    ranked, manifest = _kept(tmp_path / "out", "rank")
    reasons = {k.split(":")[0] for s in manifest["shards"] for k in s["reasons"]}
    assert reasons == {"judge"}
    assert sum(s["rejected"] for s in manifest["shards"]) + len(ranked) == sum(s["inputs"] for s in manifest["shards"])


def test_a_judge_ranker_without_a_teacher_is_a_config_error(tmp_path):
    cfg = _with_rank(tmp_path, {"plugin": "judge"})
    with pytest.raises(ConfigError, match="stages\\[2\\].teacher: ranker 'judge' needs a judge model"):
        pipeline(cfg)


def test_reward_function_errors_are_clear():
    with pytest.raises(PluginError, match="must be written 'package.module:function'"):
        RewardFunctionRanker(function="nocolon")
    with pytest.raises(PluginError, match="cannot load reward function 'reward_fns:nope'"):
        RewardFunctionRanker(function="reward_fns:nope")


def test_judge_reads_json_and_falls_back_to_a_number():
    j = JudgeRanker()
    assert j._read_score('{"score": 7}') == 7.0
    assert j._read_score("I'd give it 8 out of 10") == 8.0
    assert j._read_score('{"score": 42}') is None  # out of range
    assert j._read_winner('{"winner": "B"}') == "B" and j._read_winner("A is better") == "A"


def test_records_without_answers_are_rejected_not_lost():
    from distill.ranker import candidates_of

    assert candidates_of(make_record("q")) == []


@pytest.mark.slow  # loads a real transformers model
def test_reward_model_ranker_scores_with_a_real_sequence_classifier(tiny_reward_dir, tmp_path):
    from distill.plugin import PluginContext
    from distill_plugins.rankers import RewardModelRanker

    rm = RewardModelRanker(model=str(tiny_reward_dir), batch_size=2)
    rm.setup(PluginContext(base_dir=tmp_path, progress=False))
    recs = [
        make_record(
            "How do I reset it?", candidates=[("Hold the button.", None), ("No idea.", None), ("Unplug it.", None)]
        ),
        make_record("Hi", "Hello!"),
    ]
    first = rm.score_batch(recs, None)
    assert [len(s) for s in first] == [3, 1]
    assert rm.score_batch(recs, None) == first  # deterministic
    assert len(set(first[0])) == 3  # a real model: different answers, different scores
    rm.close()
    with pytest.raises(PluginError, match="not a transformers model folder"):
        RewardModelRanker(model="nope").setup(PluginContext(base_dir=tmp_path, progress=False))


def test_a_reward_function_can_live_in_a_file_beside_the_config(tmp_path):
    from distill.plugin import PluginContext
    from distill_plugins.rankers import load_callable

    (tmp_path / "rubric.py").write_text("def score(prompt, response):\n    return float(len(response))\n")
    ranker = RewardFunctionRanker(function="rubric.py:score")
    ranker.setup(PluginContext(base_dir=tmp_path))
    assert ranker.reward([{"role": "user", "content": "q"}], "abcd") == 4.0
    with pytest.raises(PluginError, match=r"cannot load reward function 'missing.py:score': ImportError: no file"):
        load_callable("missing.py:score", tmp_path)
    (tmp_path / "broken.py").write_text("def score(:\n")
    with pytest.raises(PluginError, match="SyntaxError"):
        load_callable("broken.py:score", tmp_path)


def test_a_model_the_ranker_runs_itself_is_recorded_as_a_judge_with_its_terms(tmp_path):
    from distill.hookspecs import hookimpl
    from distill.records import Generator

    class LicensedScorer(RewardFunctionRanker):
        """Stands in for a reward model: a ranker that runs a model of its own."""

        name = "licensed-scorer"

        def generators(self):
            return [Generator(role="judge", plugin=self.name, model="acme/rm", license="CC-BY-NC-4.0")]

    class Plugins:
        @hookimpl
        def register_rankers(self, register):
            register(LicensedScorer)

    cfg = _with_rank(tmp_path, {"plugin": "licensed-scorer", "options": {"function": "reward_fns:prefers_short"}})
    pipeline(cfg, ("scorer", Plugins())).run()
    ranked, _ = _kept(tmp_path / "out", "rank")
    for r in ranked:
        assert [(g.role, g.model) for g in r.provenance.generators if g.plugin == "licensed-scorer"] == [
            ("judge", "acme/rm")
        ]
        assert "CC-BY-NC-4.0" in r.provenance.license.expression and r.provenance.license.use == "non-commercial"
