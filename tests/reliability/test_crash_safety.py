"""Crash safety: SIGKILL a real `distill run` at seeded random points during generate, filter
and export; resume; compare with a run that was never killed.

Each trial gets a fresh folder and its own request cache. Its first kill is aimed at one phase
(a generate stage, the filter stage, or the export) a random moment after a random number of
committed shards; later kills land a random time after the process starts. After the last kill
the run is resumed to completion, and then:

- every stage holds exactly the reference run's records, kept and rejected, in the same order
  and with the same text (none lost, none duplicated); the export on disk has the same rows;
- every manifest is complete and balanced (in + generated == kept + rejected), every shard
  matches its digest, and no uncommitted file is left behind;
- the teacher was asked at most one batch more per kill than in the reference run. Calls are
  counted by the teacher itself (a line per request started, in a file) and against the cache:
  requests made minus distinct requests cached is what the kills cost.
"""

from __future__ import annotations

import random
import shutil
import signal
from pathlib import Path

import pytest

from distill.cache.store import RequestCache

from .harness import (
    call_log_count,
    check_output,
    child_env,
    crash_config,
    distill,
    kill_when,
    manifest,
    read_output,
    start_run,
)

pytestmark = pytest.mark.slow

TRIALS = 12
SEED = 8000
PHASES = ("generate", "filter", "export")
#: Seconds the test observer holds the export stage between its commit and its seal (see
#: reliability_plugins): long enough for a kill aimed at the export to land inside it.
EXPORT_PAUSE = 0.5
#: Requests in flight at most: the generate stages' batch_size (self-instruct asks <= batch_size per round).
BATCH = 4


def _shards(out: Path, stage: str) -> int:
    m = manifest(out, stage)
    return len(m.shards) if m else 0


def _complete(out: Path, stage: str) -> bool:
    m = manifest(out, stage)
    return bool(m and m.complete)


def _in_progress(out: Path) -> str:
    """Where a killed run was: the first stage not complete, or the cards after the export."""
    for stage in ("seeds", "instructions", "answers", "clean", "sft"):
        if not _complete(out, stage):
            return stage
    return "cards"


def _aim(rng: random.Random, phase: str, out: Path):
    """The condition that puts the first kill inside `phase`, and how long to wait after it."""
    if phase == "generate":
        stage = rng.choice(["instructions", "answers"])
        need = _shards(out, stage) + rng.randint(0, 3 if stage == "answers" else 1)
        return (lambda: _shards(out, stage) >= need), rng.uniform(0.0, 0.12), f"{stage} after {need} shards"
    if phase == "filter":
        need = _shards(out, "clean") + rng.randint(0, 4)
        return (lambda: _shards(out, "clean") >= need), rng.uniform(0.0, 0.1), f"clean after {need} shards"
    return (lambda: _complete(out, "clean")), rng.uniform(0.0, EXPORT_PAUSE), "export"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, plugin_env):
    """The uninterrupted run every trial is compared with; one with and one without the cache."""
    refs = {}
    for cache in (True, False):
        folder = tmp_path_factory.mktemp(f"reference-cache-{cache}")
        config = crash_config(folder, cache=cache)
        env = child_env(plugin_env, DISTILL_TEST_CALL_LOG=str(folder / "calls.log"))
        r = distill("run", str(config), "--quiet", env=env)
        assert r.returncode == 0, r.stderr
        refs[cache] = (read_output(folder / "out"), call_log_count(folder / "calls.log"))
    assert refs[True][1] == refs[False][1] > 0
    return refs


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_then_resume_loses_and_duplicates_nothing(trial, tmp_path, plugin_env, reference, figures):
    rng = random.Random(SEED + trial)
    phase = PHASES[trial % len(PHASES)]
    cache = trial % 4 != 3  # every fourth trial without the cache: resume alone must redo the batch exactly
    want, ref_calls = reference[cache]
    config = crash_config(tmp_path, cache=cache)
    out, calls_log, log = tmp_path / "out", tmp_path / "calls.log", tmp_path / "runs.log"
    env = child_env(plugin_env, DISTILL_TEST_CALL_LOG=str(calls_log), DISTILL_TEST_EXPORT_PAUSE=str(EXPORT_PAUSE))

    kills, where, during = 0, [], []
    for attempt in range(rng.randint(1, 3)):
        proc = start_run(config, env, log)
        if attempt == 0:
            cond, pause, aim = _aim(rng, phase, out)
        else:
            cond, pause, aim = (lambda: True), rng.uniform(0.3, 3.0), "anywhere"
        if kill_when(proc, cond, pause) == -signal.SIGKILL:
            kills += 1
            where.append(f"{aim} +{pause:.2f}s")
            during.append(_in_progress(out))
        elif proc.returncode == 0:
            break  # finished before the kill landed
        else:
            pytest.fail(f"run exited with {proc.returncode}:\n{log.read_text()[-3000:]}")

    final = distill("run", str(config), "--quiet", env=env)
    assert final.returncode == 0, final.stderr
    assert "Traceback" not in log.read_text()

    check = check_output(out, want)
    extra_calls = call_log_count(calls_log) - ref_calls
    if cache:
        with RequestCache(tmp_path / "requests.sqlite", create=False) as c:
            entries = c.stats().entries
        assert entries == ref_calls, "the cache holds exactly the reference run's distinct requests"
        repeated = call_log_count(calls_log) - entries
    else:
        repeated = extra_calls
    figures.add(
        trials_run=1,
        kills=kills,
        records_checked=check.records,
        lost=check.lost,
        duplicated=check.duplicated,
        teacher_calls=call_log_count(calls_log),
        teacher_calls_repeated_after_kills=repeated,
        **{f"killed_during_{s}": during.count(s) for s in set(during)},
    )
    assert not check.problems, check.problems
    assert check.lost == 0 and check.duplicated == 0
    assert 0 <= repeated <= kills * BATCH, (repeated, kills, where)
    shutil.rmtree(out)  # keep the temporary folder small for the next trials


def test_a_total_of_kills_across_phases(figures):
    """The trials above must really have killed runs in every phase (not finished first)."""
    by = figures.total
    if by.get("trials_run", 0) < TRIALS:
        pytest.skip("run with the whole crash-safety module to count kills")
    generate = by.get("killed_during_instructions", 0) + by.get("killed_during_answers", 0)
    assert by["kills"] >= TRIALS, dict(by)
    assert generate and by.get("killed_during_clean") and by.get("killed_during_sft"), dict(by)


def test_a_kill_while_a_card_is_written_leaves_no_debris_in_the_dataset(tmp_path, plugin_env, reference, figures):
    """A kill between a card's temporary file and its rename (a window too short to hit at
    random) leaves `.README.md.<pid>.tmp` in the published folder: the next run removes it."""
    config = crash_config(tmp_path)
    env = child_env(plugin_env, DISTILL_TEST_CALL_LOG=str(tmp_path / "calls.log"))
    assert distill("run", str(config), "--quiet", env=env).returncode == 0
    sft = tmp_path / "out" / "export" / "sft"
    for name in ("README.md", "NOTICE", "croissant.json"):
        (sft / f".{name}.999999.tmp").write_text("half a card")
    (sft / "README.md").write_text("half a card")  # an older card: rewritten whole
    assert distill("run", str(config), "--quiet", env=env).returncode == 0
    check = check_output(tmp_path / "out", reference[True][0])
    figures.add(records_checked=check.records, lost=check.lost, duplicated=check.duplicated)
    assert not check.problems, check.problems
    assert (sft / "README.md").read_text().startswith("---\n")
