"""SIGKILL a real run during generation, resume it, and compare with a run never killed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distill.io.inspect import inspect_output
from distill.io.store import read_shards

pytestmark = pytest.mark.slow

TOPICS = [
    "router",
    "Wi-Fi",
    "mesh node",
    "guest network",
    "firmware",
    "port",
    "channel",
    "modem",
    "password",
    "parental controls",
]


def _write(folder: Path, model_dir: Path) -> Path:
    seeds = folder / "seeds.jsonl"
    with open(seeds, "w") as f:
        for i in range(40):
            f.write(json.dumps({"prompt": f"Question {i}: how do I fix my {TOPICS[i % len(TOPICS)]}?"}) + "\n")
        f.write("{broken json\n")
    cfg = {
        "output": "out",
        "cache": {"enabled": False},  # resume alone must reproduce the batch in flight
        "seed": 3,
        "seeds": [{"path": "seeds.jsonl", "license": "CC0-1.0"}],
        "teachers": {
            "tiny": {
                "plugin": "transformers",
                "options": {"model": str(model_dir), "max_tokens": 24, "n": 2, "batch_size": 4},
            }
        },
        "stages": [
            {"kind": "generate", "name": "answers", "teacher": "tiny", "batch_size": 2, "task": {"plugin": "response"}},
            {"kind": "filter", "name": "clean", "filters": ["exact-dedup"]},
            {"kind": "export", "name": "sft", "format": "sft"},
        ],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distill.cli", "run", str(config), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _committed(out: Path, stage: str) -> tuple[int, bool]:
    try:
        m = json.loads((out / "stages" / stage / "manifest.json").read_text())
    except (OSError, ValueError):
        return 0, False
    return len(m["shards"]), m["complete"]


def _all_records(out: Path) -> dict[str, tuple[list, list]]:
    result = {}
    for d in sorted((out / "stages").iterdir()):
        m = json.loads((d / "manifest.json").read_text())
        kept = list(read_shards(d, [s["kept_file"] for s in m["shards"]]))
        rejected = list(read_shards(d, [s["rejected_file"] for s in m["shards"]]))
        result[d.name] = (kept, rejected)
    return result


def test_sigkill_during_generation_then_resume_loses_and_duplicates_nothing(tmp_path, tiny_model_dir):
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    ref_dir.mkdir()
    run_dir.mkdir()
    ref = _run(_write(ref_dir, tiny_model_dir))
    assert ref.wait(timeout=600) == 0, ref.stderr.read()

    config = _write(run_dir, tiny_model_dir)
    out = run_dir / "out"
    rng = random.Random(1234)
    kills = 0
    for _attempt in range(3):  # kill at a few points, each after some shards are committed
        proc = _run(config)
        start_shards = _committed(out, "answers")[0]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            shards, complete = _committed(out, "answers")
            if complete or proc.poll() is not None:
                break
            if shards >= start_shards + 2:
                time.sleep(rng.uniform(0.0, 0.3))  # somewhere inside the next batch
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                break
            time.sleep(0.02)
        else:
            proc.kill()
            pytest.fail("the run made no progress in 300 s")
        if proc.returncode == 0:
            break
    assert kills >= 1, "the run finished before it could be killed: give it more work"

    final = _run(config)
    assert final.wait(timeout=600) == 0, final.stderr.read()

    want, got = _all_records(ref_dir / "out"), _all_records(out)
    assert list(got) == list(want)
    for stage in want:
        (wk, wr), (gk, gr) = want[stage], got[stage]
        assert [r.id for r in gk] == [r.id for r in wk], stage  # none lost, none duplicated
        assert len({r.id for r in gk}) == len(gk)
        assert [r.id for r in gr] == [r.id for r in wr], stage
        assert [r.messages for r in gk] == [r.messages for r in wk], stage  # same samples after resume
    for report in inspect_output(out):
        assert report.complete and report.balanced, report
    answers, _ = got["answers"]
    assert len(answers) + len(got["answers"][1]) == 40
    for r in answers:
        assert r.provenance.generators[0].file_hash and r.provenance.generators[0].license == "Apache-2.0"
        assert r.provenance.license.expression == "CC0-1.0 AND Apache-2.0"
