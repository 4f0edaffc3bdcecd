"""A stage's input read shard by shard: the same records as reading them all, parsed once in order."""

from __future__ import annotations

import pytest

from distill.io.store import StageStore
from distill.io.upstream import UpstreamRecords
from distill.testing import make_record


@pytest.fixture
def store(tmp_path):
    """Shards of 4, 0 (everything rejected), 3 and 5 kept records: 12 in all."""
    s = StageStore(tmp_path, "up", "filter", "h")
    n = 0
    for size in (4, 0, 3, 5):
        kept = [make_record(f"question {n + k}", "answer", id=f"r{n + k}") for k in range(size)]
        rejected = [make_record("dropped", id=f"x{n}")]
        s.commit(kept, rejected, inputs=size + 1)
        n += size
    s.finish()
    return s


def test_the_same_records_as_reading_every_shard(store):
    up = UpstreamRecords(store)
    every = [r.id for r in store.kept()]
    assert len(up) == len(every) == 12
    assert [r.id for r in up] == every
    assert up[0].id == "r0" and up[4].id == "r4" and up[-1].id == "r11" and up[11].id == "r11"
    for lo in range(13):
        for hi in range(lo, 14):
            assert [r.id for r in up[lo:hi]] == every[lo:hi], (lo, hi)
    assert [r.id for r in up[::5]] == every[::5]
    with pytest.raises(IndexError):
        up[12]


def test_a_walk_in_batches_parses_each_shard_once(store):
    up = UpstreamRecords(store)
    for b in range(0, len(up), 3):  # batches that straddle shard boundaries
        up[b : b + 3]
    assert up.reads == 4
    assert sum(1 for _ in up) == 12 and up.reads == 8  # a second pass parses each shard once more
