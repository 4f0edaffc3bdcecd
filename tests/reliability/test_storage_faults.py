"""Storage faults: a truncated shard, a corrupted manifest, a corrupted cache, an unwritable
output folder, a full disk. Each is detected, reported as one clear line (no traceback), and
recovered from without losing what was committed: the final output equals a run that never
met the fault, and the teacher is asked again at most for the batch in flight.

The read-only folder and the full disk are real when the suite runs as root: a read-only bind
mount of the output folder, and a small tmpfs mounted as the output folder (then grown with
`mount -o remount,size=...`, as freeing space would). Without root they are simulated as
honestly as a user can: `chmod a-w` on the output's folders, and RLIMIT_FSIZE on the run (its
writes past the limit fail with EFBIG, SIGXFSZ ignored), which fails a real write() the way a
full disk does, at whichever file grows past the limit first (a shard, a manifest or the cache).
"""

from __future__ import annotations

import functools
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from .harness import call_log_count, check_output, child_env, crash_config, distill, manifest, read_output, start_run

pytestmark = pytest.mark.slow
BATCH = 4


@functools.lru_cache(maxsize=1)
def can_mount() -> bool:
    """Root with a working `mount` (a container may forbid it): then faults are real file systems."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    import tempfile

    probe = Path(tempfile.mkdtemp(prefix="distill-mount-probe-"))
    try:
        ok = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
            ).returncode
            == 0
        )
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@contextmanager
def _mounted(path: Path):
    """Unmount `path` however the test ends, so pytest can delete its temporary folder."""
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _clean_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """The error message, after the run log's lines (stderr is no terminal here) and nothing else."""
    lines = r.stderr.splitlines()
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    assert start is not None, r.stderr
    assert all(re.match(r"\d\d:\d\d:\d\d stage ", line) for line in lines[:start]), r.stderr
    text = " ".join(" ".join(lines[start:]).split())
    for n in needles:
        assert n in text, (n, r.stderr)
    return text


@pytest.fixture(scope="module")
def template(tmp_path_factory, plugin_env):
    """One finished run (config, output, warm cache, call log) that each test copies."""
    folder = tmp_path_factory.mktemp("storage-template")
    config = crash_config(folder)
    env = child_env(plugin_env, DISTILL_TEST_CALL_LOG=str(folder / "calls.log"))
    r = distill("run", str(config), "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    return folder, read_output(folder / "out")


@pytest.fixture
def completed(tmp_path, plugin_env, template):
    """A copy of the finished run: its config, reference records and the teacher calls it took."""
    folder, want = template
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True, symlinks=True)
    env = child_env(plugin_env, DISTILL_TEST_CALL_LOG=str(tmp_path / "calls.log"))
    return tmp_path / "config.yaml", env, want, call_log_count(tmp_path / "calls.log")


def _recover_and_check(
    config: Path, env, want, figures, calls_before: int, *, max_new_calls: int = 0, fault: str
) -> None:
    out = config.parent / "out"
    r = distill("run", str(config), "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    check = check_output(out, want)
    new_calls = call_log_count(config.parent / "calls.log") - calls_before
    calls = {"teacher_calls_after_losing_the_cache" if fault == "cache" else "teacher_calls_repeated": new_calls}
    figures.add(
        faults_injected=1,
        storage_faults=1,
        records_checked=check.records,
        lost=check.lost,
        duplicated=check.duplicated,
        **calls,
        **{f"storage_fault_{fault}": 1},
    )
    assert not check.problems, check.problems
    assert check.lost == 0 and check.duplicated == 0
    assert new_calls <= max_new_calls, new_calls


@pytest.mark.parametrize("stage,which", [("answers", -1), ("clean", 0), ("sft", -1)])
def test_a_truncated_shard_is_reported_and_repaired_without_losing_committed_shards(completed, stage, which, figures):
    config, env, want, calls = completed
    out = config.parent / "out"
    m = manifest(out, stage)
    shard = m.shards[which]
    path = out / "stages" / stage / shard.kept_file
    torn = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(torn)  # torn in the middle of a record

    r = distill("inspect", str(out), env=env)
    assert r.returncode == 1 and f"{shard.kept_file} is corrupted" in r.stderr and "distill repair" in r.stderr
    _clean_error(
        distill("run", str(config), "--quiet", env=env),
        f"stage '{stage}'",
        shard.kept_file,
        "is corrupted",
        "distill repair",
    )

    r = distill("repair", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert f"kept the {shard.index} before it" in " ".join(r.stdout.split()), r.stdout
    damaged = next((out / "damaged").iterdir())
    assert (damaged / shard.kept_file).read_bytes() == torn  # set aside, not deleted
    assert len(manifest(out, stage).shards) == shard.index and not manifest(out, stage).complete
    assert distill("repair", str(out), env=env).stdout.startswith("nothing to repair")
    # Redoing the damaged batch is free: its teacher calls are answered from the cache.
    _recover_and_check(config, env, want, figures, calls, fault="truncated_shard")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "path-traversal"])
def test_a_corrupted_manifest_is_reported_and_the_stage_redone(completed, damage, figures):
    config, env, want, calls = completed
    out = config.parent / "out"
    path = out / "stages" / "answers" / "manifest.json"
    if damage == "garbage":
        path.write_bytes(os.urandom(512))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    else:  # a crafted manifest naming a file outside its folder is refused, never read
        data = json.loads(path.read_text())
        data["shards"][0]["kept_file"] = "../../../../../../etc/passwd"
        path.write_text(json.dumps(data))
    for cmd in (["inspect", str(out)], ["run", str(config), "--quiet"]):
        r = distill(*cmd, env=env)
        _clean_error(r, "manifest of stage 'answers' is corrupted")
    r = distill("repair", str(out), env=env)
    assert r.returncode == 0 and "manifest is unreadable" in r.stdout, r.stdout + r.stderr
    assert not (out / "stages" / "answers").exists() and any((out / "damaged").iterdir())
    _recover_and_check(config, env, want, figures, calls, fault=f"manifest_{damage}")


def test_a_corrupted_cache_is_reported_and_never_rebuilt_silently(tmp_path, plugin_env, completed, figures):
    config, env, want, _ = completed
    out, cache = tmp_path / "out", tmp_path / "requests.sqlite"
    shutil.rmtree(out)
    assert distill("run", str(config), "--quiet", "--until", "answers", env=env).returncode == 0
    committed = read_output(out)
    for p in tmp_path.glob("requests.sqlite*"):
        p.unlink()
    cache.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    text = _clean_error(
        distill("run", str(config), "--quiet", env=env), "request cache", "is corrupted", "move it aside"
    )
    assert "Traceback" not in text and read_output(out) == committed  # nothing committed was touched
    assert cache.read_bytes().startswith(b"SQLite format 3\x00")  # not rebuilt behind the user's back
    cache.rename(cache.with_suffix(".damaged"))  # what the message says to do
    calls = call_log_count(tmp_path / "calls.log")
    # The cache is gone, so the answers are asked for again: the stage's 40 requests.
    _recover_and_check(config, env, want, figures, calls, max_new_calls=40, fault="cache")


def _make_read_only(out: Path) -> None:
    """Read-only from now on, for every process. A fresh bind mount is remounted read-only (the
    original mount would refuse while the run holds files open for writing)."""
    if can_mount():
        _sh("mount", "--bind", str(out), str(out))
        for _attempt in range(50):
            if subprocess.run(["mount", "-o", "remount,ro,bind", str(out)], capture_output=True).returncode == 0:
                return
            time.sleep(0.02)
        raise AssertionError(f"could not remount {out} read-only")
    else:
        for p in [out, *out.rglob("*")]:
            if p.is_dir():
                p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(out: Path) -> None:
    if can_mount():
        subprocess.run(["umount", "-l", str(out)], capture_output=True)
    else:
        for p in [out, *out.rglob("*")]:
            if p.is_dir():
                p.chmod(p.stat().st_mode | stat.S_IWUSR)


def _require_unwritable_possible() -> None:
    if os.geteuid() == 0 and not can_mount():
        pytest.skip("root ignores permissions and mount is not allowed here: no honest read-only folder")


@pytest.mark.parametrize("when", ["before", "during"])
def test_an_unwritable_output_folder_is_reported_and_the_run_resumes(tmp_path, plugin_env, completed, when, figures):
    _require_unwritable_possible()
    config, env, want, _ = completed
    out = tmp_path / "out"
    target = out if when == "before" else out / "stages"
    shutil.rmtree(out)
    calls = call_log_count(tmp_path / "calls.log")
    figures.note("read_only_method", "read-only bind mount" if can_mount() else "chmod a-w")
    try:
        if when == "before":
            assert distill("run", str(config), "--quiet", "--until", "clean", env=env).returncode == 0
            committed = read_output(out)
            _make_read_only(target)
            r = distill("run", str(config), "--quiet", env=env)
            _clean_error(r, "cannot write the output folder")
        else:
            (out / "stages").mkdir(parents=True)
            proc = start_run(config, env, tmp_path / "run.log")
            deadline = time.monotonic() + 60
            while (m := manifest(out, "clean")) is None or len(m.shards) < 2:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()
                time.sleep(0.01)
            _make_read_only(target)
            assert proc.wait(timeout=60) == 1
            log = (tmp_path / "run.log").read_text()
            assert "Traceback" not in log and "error:" in log and "run the same command again" in " ".join(log.split())
            committed = read_output(out)
            assert len(committed["clean"][0]) + len(committed["clean"][1]) >= 10  # the two shards seen, at least
        partial = check_output(out, complete=False)
        assert not partial.problems and partial.duplicated == 0, partial.problems
    finally:
        _make_writable(target)
    r = distill("run", str(config), "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    for stage, (kept, _rejected) in committed.items():  # committed data survived as it was
        assert [x.id for x in read_output(out)[stage][0][: len(kept)]] == [x.id for x in kept]
    _recover_and_check(config, env, want, figures, call_log_count(tmp_path / "calls.log"), fault=f"read_only_{when}")
    assert call_log_count(tmp_path / "calls.log") - calls <= BATCH


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_reported_and_the_run_resumes_once_there_is_space(tmp_path, plugin_env, completed, figures):
    config, env, want, _ = completed
    out = tmp_path / "out"
    shutil.rmtree(out)
    calls = call_log_count(tmp_path / "calls.log")
    if not can_mount():
        figures.note("full_disk_method", "RLIMIT_FSIZE 24 KiB on the run (EFBIG, SIGXFSZ ignored)")
        pytest.skip("mounting a small file system needs root: the file size limit test below stands in")
    figures.note("full_disk_method", "tmpfs mounted as the output folder (size 160k, then 64m)")
    out.mkdir()
    with _mounted(out):
        _sh("mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(out))
        r = distill("run", str(config), "--quiet", env=env)
        text = _clean_error(r, "No space left on device", "run the same command again")
        partial = check_output(out, complete=False)
        assert not partial.problems and partial.duplicated == 0, partial.problems
        committed = read_output(out)
        assert sum(len(k) for k, _ in committed.values()) > 0, text
        _sh("mount", "-o", "remount,size=64m", str(out))  # space was freed
        _recover_and_check(config, env, want, figures, calls, max_new_calls=BATCH, fault="full_disk")
        for stage, (kept, _) in committed.items():
            assert [x.id for x in read_output(out)[stage][0][: len(kept)]] == [x.id for x in kept]
        shutil.rmtree(out / "stages")
        shutil.rmtree(out / "export", ignore_errors=True)


def test_a_file_size_limit_is_reported_like_a_full_disk(tmp_path, plugin_env, completed, figures):
    """The simulation used where mounting is not possible, run everywhere so it stays honest."""
    config, env, want, _ = completed
    out = tmp_path / "out"
    shutil.rmtree(out)
    calls = call_log_count(tmp_path / "calls.log")
    r = subprocess.run(
        [*_cli(), "run", str(config), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit_file_size(24 * 1024),
        timeout=300,
    )
    text = _clean_error(r, "run the same command again")
    # Whichever file crossed the limit first: a shard or manifest (EFBIG), or the cache (SQLite's words).
    assert any(w in text for w in ("File too large", "disk I/O error", "disk is full")), text
    partial = check_output(out, complete=False)
    assert not partial.problems and partial.duplicated == 0, partial.problems
    _recover_and_check(config, env, want, figures, calls, max_new_calls=BATCH, fault="file_size_limit")


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "distill.cli"]
