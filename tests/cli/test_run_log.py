"""`distill run` with stderr not a terminal (CI, nohup, a container's log): a line when each
stage starts and ends, a progress line every interval, no third-party bars, and the same
events as JSON lines with `--log-format json`. Real subprocesses, stderr redirected to a file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from reliability.harness import PLUGINS, child_env, crash_config, manifest, plugin_site
from runlog_plugins import BAR_TEXT, ENTRY_POINT, SECRET_ENV

HERE = Path(__file__).resolve().parent
SECRET = 'sk-runlog"canary-7f3a9c'  # a quote in it: JSON escapes it, the scrub must still find it
STAGES = ["seeds", "instructions", "answers", "clean", "sft"]
CLOCK = r"\d\d:\d\d:\d\d"


def _site(folder: Path) -> dict[str, str]:
    """The reliability suite's plugins (its counting teacher) and this folder's `bar-pass`."""
    site = plugin_site(folder / "site")
    info = folder / "site" / "distill_runlog_test-0.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distill-runlog-test\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text(f"[distill]\n{ENTRY_POINT} = runlog_plugins\n")
    return {
        "PYTHONPATH": os.pathsep.join([str(HERE), site["PYTHONPATH"]]),
        "DISTILL_PLUGINS": f"{PLUGINS},{ENTRY_POINT}",
    }


def _config(folder: Path) -> Path:
    """Seeds -> self-instruct -> answers (0.1 s a request) -> a filter that takes 0.4 s a batch
    of 5 and draws a tqdm bar -> export: the answers and filter stages span several seconds."""
    path = crash_config(folder, delay=0.1)
    cfg = yaml.safe_load(path.read_text())
    cfg["stages"][2]["filters"] = [{"plugin": "bar-pass", "options": {"delay": 0.4}}]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _run(folder: Path, *args: str) -> str:
    env = child_env(_site(folder), DISTILL_LOG_INTERVAL="1", **{SECRET_ENV: SECRET})
    log = folder / "stderr.log"
    with open(log, "w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "distill.cli", "run", str(_config(folder)), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            timeout=300,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    assert "output:" in done.stdout  # the summary tables stay on stdout
    return text


def _totals(folder: Path, stage: str) -> dict[str, int]:
    m = manifest(folder / "out", stage)
    assert m is not None
    return m.totals()


def _no_bars_or_secrets(text: str) -> None:
    assert BAR_TEXT not in text and "it/s]" not in text and "%|" not in text and "\r" not in text, text
    assert "Loading weights" not in text and "Writing model shards" not in text
    assert "canary" not in text and f"${SECRET_ENV}" in text  # the drop reason, scrubbed


def test_text_lines_say_when_each_stage_starts_ends_and_how_far_it_is(tmp_path):
    text = _run(tmp_path)
    lines = text.splitlines()
    assert all(re.match(CLOCK + " ", line) for line in lines), text
    for stage in STAGES:
        starts = [line for line in lines if re.fullmatch(rf"{CLOCK} stage '{stage}' \(\w+\) started", line)]
        t = _totals(tmp_path, stage)
        counts = f"in {t['in']}, generated {t['generated']}, kept {t['kept']}, rejected {t['rejected']}"
        ends = [line for line in lines if re.match(rf"{CLOCK} stage '{stage}' done in [\d.]+s: {counts}", line)]
        assert len(starts) == 1 and len(ends) == 1, (stage, text)
        assert lines.index(starts[0]) < lines.index(ends[0])
    calls = manifest(tmp_path / "out", "answers").stats["calls"]
    assert f"{calls['requests']} teacher requests, {calls['cache_hits']} cache hits" in text
    for stage in ("answers", "clean"):  # each spans several 1 s intervals
        progress = [line for line in lines if re.match(rf"{CLOCK} stage '{stage}': \d+/\d+ records \(\d+%\)", line)]
        assert len(progress) >= 2, (stage, text)
        assert all(line.endswith("s elapsed") for line in progress)
    assert any("teacher requests" in line for line in lines if "stage 'answers': " in line)
    _no_bars_or_secrets(text)


def test_json_lines_carry_the_same_events(tmp_path):
    text = _run(tmp_path, "--log-format", "json")
    events = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert {e["event"] for e in events} <= {"stage_start", "progress", "stage_end", "message"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]) for e in events)
    ends = [e for e in events if e["event"] == "stage_end"]
    assert [e["stage"] for e in events if e["event"] == "stage_start"] == STAGES
    assert [e["stage"] for e in ends] == STAGES
    for e in ends:
        t = _totals(tmp_path, e["stage"])
        assert e["status"] == "done" and e["seconds"] >= 0
        assert {k: e[k] for k in t} == t
    answers = next(e for e in ends if e["stage"] == "answers")
    calls = manifest(tmp_path / "out", "answers").stats["calls"]
    assert answers["kind"] == "generate" and answers["requests"] == calls["requests"] > 0
    assert answers["cache_hits"] == calls["cache_hits"]
    clean = next(e for e in ends if e["stage"] == "clean")
    assert clean["reasons"] == {f"bar-pass: quotes the key ${SECRET_ENV}": 1}
    progress = [e for e in events if e["event"] == "progress" and e["stage"] == "clean"]
    assert len(progress) >= 2 and all(e["unit"] == "records" and e["total"] == clean["in"] for e in progress)
    assert [e["done"] for e in progress] == sorted(e["done"] for e in progress)
    _no_bars_or_secrets(text)

    again = _run(tmp_path, "--log-format", "json")  # resumed: every stage is complete
    ends = [json.loads(line) for line in again.splitlines() if '"stage_end"' in line]
    assert [(e["stage"], e["status"]) for e in ends] == [(s, "cached") for s in STAGES]
