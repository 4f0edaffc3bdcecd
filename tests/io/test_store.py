"""Shards, manifests and the lock: what makes a killed run safe to resume."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from distill.errors import StoreError
from distill.io.store import RunLock, StageStore
from distill.records import Message, Record


def _rec(i: int, reason: str | None = None) -> Record:
    r = Record(id=f"r{i}", messages=[Message(role="user", content=f"q{i}")])
    if reason:
        r.add_event("s", "dropped", plugin="length", reason=reason)
    return r


def test_commit_and_read_back(tmp_path):
    s = StageStore(tmp_path, "s", "filter", "h1")
    s.commit([_rec(1), _rec(2)], [_rec(3, "too short: 1 < 2")], inputs=3)
    s.commit([_rec(4)], [], inputs=1)
    s.finish()
    again = StageStore(tmp_path, "s", "filter", "h1")
    assert again.manifest.complete and again.next_index == 2
    assert [r.id for r in again.kept()] == ["r1", "r2", "r4"]
    assert [r.id for r in again.rejected()] == ["r3"]
    assert again.manifest.totals() == {"in": 4, "generated": 0, "kept": 3, "rejected": 1}
    assert dict(again.manifest.reasons()) == {"length: too short": 1}


def test_commit_refuses_to_lose_records(tmp_path):
    s = StageStore(tmp_path, "s", "filter", "h1")
    with pytest.raises(StoreError, match="would lose records: 3 in"):
        s.commit([_rec(1)], [], inputs=3)
    assert s.next_index == 0


def test_uncommitted_files_are_debris(tmp_path):
    s = StageStore(tmp_path, "s", "filter", "h1")
    s.commit([_rec(1)], [], inputs=1)
    (s.dir / "kept-00001.jsonl").write_text(_rec(2).model_dump_json() + "\n")  # written, never listed
    (s.dir / ".kept-00002.jsonl.tmp").write_text("partial")
    again = StageStore(tmp_path, "s", "filter", "h1")
    assert sorted(again.clean_debris()) == [".kept-00002.jsonl.tmp", "kept-00001.jsonl"]
    assert [r.id for r in again.kept()] == ["r1"]


def test_a_corrupted_shard_is_reported_not_read(tmp_path):
    s = StageStore(tmp_path, "s", "filter", "h1")
    s.commit([_rec(1), _rec(2)], [], inputs=2)
    path = s.dir / "kept-00000.jsonl"
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    with pytest.raises(StoreError, match="kept-00000.jsonl is corrupted"):
        StageStore(tmp_path, "s", "filter", "h1").verify()


def test_a_corrupted_manifest_is_reported(tmp_path):
    s = StageStore(tmp_path, "s", "filter", "h1")
    s.commit([_rec(1)], [], inputs=1)
    (s.dir / "manifest.json").write_text('{"stage": "s", "shards": [')
    with pytest.raises(StoreError, match="manifest of stage 's' is corrupted"):
        StageStore(tmp_path, "s", "filter", "h1")


def test_a_changed_digest_means_the_stage_is_redone(tmp_path):
    s = StageStore(tmp_path, "s", "filter", "h1")
    s.commit([_rec(1)], [], inputs=1)
    s.finish()
    again = StageStore(tmp_path, "s", "filter", "h2")
    assert again.stale and again.next_index == 0 and not again.manifest.complete
    assert list(again.dir.iterdir()) == []
    # the old output is moved aside, not deleted: it may hold generations someone paid for
    assert again.moved_to.parent == tmp_path / "stale"
    assert (again.moved_to / "kept-00000.jsonl").read_text() == _rec(1).model_dump_json() + "\n"
    again.commit([_rec(9)], [], inputs=1)
    assert [r.id for r in StageStore(tmp_path, "s", "filter", "h2").kept()] == ["r9"]


def _hold_lock(root, ready, release):
    with RunLock(root):
        ready.set()
        release.wait(10)


def test_two_runs_cannot_write_one_output(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    p.start()
    try:
        assert ready.wait(20)
        with pytest.raises(StoreError, match=f"another distill run \\(pid {p.pid}\\) is writing"):
            with RunLock(tmp_path):
                pass
    finally:
        release.set()
        p.join(10)
    with RunLock(tmp_path):  # free again once the other run ends
        pass


def test_manifest_is_plain_json(tmp_path):
    s = StageStore(tmp_path, "s", "filter", "h1")
    s.commit([_rec(1)], [], inputs=1)
    data = json.loads((s.dir / "manifest.json").read_text())
    assert data["shards"][0]["sha256"]["kept-00000.jsonl"]


def test_a_stage_that_never_committed_is_not_moved_aside(tmp_path):
    s = StageStore(tmp_path, "s", "filter", "h1")
    s._write_manifest()  # started, killed before its first commit
    again = StageStore(tmp_path, "s", "filter", "h2")
    assert not again.stale and again.moved_to is None and not (tmp_path / "stale").exists()
