"""The LLM-judge ranker against a real engine: a pipeline whose writer and judge are both the
OpenAI-compatible teacher talking to the session's vLLM server (structured output on).

The tiny model's verdicts are noise, so the checks are the ones that must hold whatever it
says: every record is scored or rejected with a reason, pairwise scores are win fractions
that sum as the games demand, the judge is in provenance, and a re-run calls no one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from util import config_dict, pipeline

from distill.io.store import read_shards

pytest.importorskip("openai")


def _stage(out: Path, name: str) -> tuple[list, list, dict]:
    d = out / "stages" / name
    m = json.loads((d / "manifest.json").read_text())
    kept = list(read_shards(d, [s["kept_file"] for s in m["shards"]]))
    rejected = list(read_shards(d, [s["rejected_file"] for s in m["shards"]]))
    return kept, rejected, m


def _config(tmp_path: Path, server: tuple[str, str], mode: str) -> dict:
    base_url, model = server
    api = {
        "plugin": "openai",
        "options": {
            "model": model,
            "base_url": base_url,
            "max_tokens": 16,
            "temperature": 1.0,
            "license": "Apache-2.0",
        },
    }
    cfg = config_dict(tmp_path)
    cfg["teachers"] = {
        "writer": {**api, "options": {**api["options"], "n": 2}},
        "judge": {**api, "options": {**api["options"], "max_tokens": 24}},
    }
    cfg["stages"] = [
        {"kind": "generate", "name": "responses", "teacher": "writer", "batch_size": 3, "task": {"plugin": "response"}},
        {
            "kind": "rank",
            "name": "rank",
            "teacher": "judge",
            "batch_size": 3,
            "ranker": {"plugin": "judge", "options": {"mode": mode}},
        },
        {"kind": "export", "name": "prefs", "format": "preference"},
    ]
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pairwise", "score"])
def test_judge_ranker_with_a_real_judge_model(vllm_server, tmp_path, mode):
    cfg = _config(tmp_path, vllm_server, mode)
    pipeline(cfg).run()
    out = tmp_path / "out"
    generated, _, _ = _stage(out, "responses")
    kept, rejected, manifest = _stage(out, "rank")
    assert generated and all(len(r.candidates) == 2 for r in generated)
    assert sorted(r.id for r in kept + rejected) == sorted(r.id for r in generated)  # nothing lost
    for r in rejected:
        assert r.provenance.events[-1].reason.startswith("judge output unparseable")

    judge_calls = sum(s["meta"]["requests"] for s in manifest["shards"])
    assert judge_calls == 2 * len(generated)  # pairwise: A/B and B/A; score: one per candidate
    for r in kept:
        scores = [c.score for c in r.candidates]
        if mode == "pairwise":  # win fractions over 2 games each; the games' points sum to 2
            assert all(s in (0.0, 0.25, 0.5, 0.75, 1.0) for s in scores)
            assert sum(scores) == pytest.approx(1.0)
        else:
            assert all(1 <= s <= 10 for s in scores)
        assert r.messages[-1].content == max(r.candidates, key=lambda c: c.score).content
        judges = [g for g in r.provenance.generators if g.role == "judge"]
        assert [(g.model, g.license) for g in judges] == [(vllm_server[1], "Apache-2.0")]
    if mode == "pairwise":
        assert kept  # the A/B/tie enum is enforced by the server: every verdict parses

    shutil.rmtree(out)  # a fresh run over the same cache: the writer and the judge are not asked again
    pipeline(cfg).run()
    again_kept, _, again = _stage(out, "rank")
    assert sum(s["meta"]["requests"] for s in again["shards"]) == judge_calls
    assert sum(s["meta"]["cache_hits"] for s in again["shards"]) == judge_calls
    assert [r.candidates for r in again_kept] == [r.candidates for r in kept]
