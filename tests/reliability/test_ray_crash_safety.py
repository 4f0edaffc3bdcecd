"""Crash safety under `executor: ray`: SIGKILL a real `distill run` whose generate and filter
stages run on a local Ray cluster (two teacher replicas per generate stage, the filters on Ray
Data), at seeded points; resume; compare with a run that never left this process.

The executor is not part of a stage's digest and must not change a record, so the reference is
the plain local run, and the checks are `test_crash_safety`'s: every stage's kept and rejected
records in order, balanced manifests, shard digests, no debris, and at most one batch of teacher
requests repeated per kill (the requests counted as the replicas start them, in their own
processes). The Ray cluster dies with the killed run; the resumed run starts a new one.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest
import yaml

from distill.cache.store import RequestCache

from .harness import call_log_count, check_output, child_env, crash_config, distill, kill_when, read_output, start_run
from .test_crash_safety import BATCH, _aim

pytestmark = pytest.mark.slow

TRIALS = 3
SEED = 9100


def ray_config(folder: Path) -> Path:
    path = crash_config(folder)
    cfg = yaml.safe_load(path.read_text())
    for stage in cfg["stages"]:
        if stage["kind"] == "generate":
            stage.update(executor="ray", ray={"num_cpus": 2, "actors": 2, "cpus_per_actor": 0.5})
        elif stage["kind"] == "filter":
            stage.update(executor="ray", ray={"num_cpus": 2})
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, plugin_env):
    pytest.importorskip("ray", reason="ray not installed (pip install 'distill[ray]')")
    folder = tmp_path_factory.mktemp("ray-reference")
    env = child_env(plugin_env, DISTILL_TEST_CALL_LOG=str(folder / "calls.log"))
    r = distill("run", str(crash_config(folder)), "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    return read_output(folder / "out"), call_log_count(folder / "calls.log")


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_under_ray_then_resume_loses_and_duplicates_nothing(
    trial, tmp_path, plugin_env, local_reference, figures
):
    rng = random.Random(SEED + trial)
    want, ref_calls = local_reference
    config = ray_config(tmp_path)
    out, calls_log, log = tmp_path / "out", tmp_path / "calls.log", tmp_path / "runs.log"
    env = child_env(plugin_env, DISTILL_TEST_CALL_LOG=str(calls_log))
    phase = ("generate", "filter")[trial % 2]

    kills = 0
    for attempt in range(rng.randint(1, 2)):
        proc = start_run(config, env, log)
        # The first kill lands inside a Ray stage; a second one anywhere after the cluster is up.
        cond, pause, _ = _aim(rng, phase, out) if attempt == 0 else ((lambda: True), rng.uniform(3.0, 8.0), "")
        code = kill_when(proc, cond, pause, timeout=180, wait=120)
        if code == -signal.SIGKILL:
            kills += 1
        elif code != 0:
            pytest.fail(f"run exited with {code}:\n{log.read_text()[-3000:]}")
        else:
            break

    final = distill("run", str(config), "--quiet", env=env, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Traceback" not in log.read_text()
    check = check_output(out, want)
    with RequestCache(tmp_path / "requests.sqlite", create=False) as c:
        entries = c.stats().entries
    assert entries == ref_calls, "the cache holds exactly the reference run's distinct requests"
    repeated = call_log_count(calls_log) - entries
    figures.add(
        trials_run=1,
        ray_trials=1,
        kills=kills,
        records_checked=check.records,
        lost=check.lost,
        duplicated=check.duplicated,
        teacher_calls=call_log_count(calls_log),
        teacher_calls_repeated_after_kills=repeated,
    )
    assert not check.problems, check.problems
    assert check.lost == 0 and check.duplicated == 0
    assert 0 <= repeated <= kills * BATCH, (repeated, kills)
