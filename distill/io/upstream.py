"""A stage's input: the kept records of the stage before it, read shard by shard as they are used.

A stage's runners take their input batch by batch, so the driver need not hold all of it at
once: with a million records upstream, reading them all first costs gigabytes before the first
batch starts. `UpstreamRecords` is a read-only sequence over the committed shards; `len` comes
from the manifest, a slice reads only the shards it covers, and the last few shards read are
kept, so a runner walking its input in order parses each shard once. Whatever needs all the
records at once (a whole-input filter's `prepare`, self-instruct's pool, an export, the Ray
filter executor) makes a list of it, as before.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import overload

from distill.io.store import StageStore, read_shards
from distill.records import Record


class UpstreamRecords(Sequence[Record]):
    def __init__(self, store: StageStore, keep_shards: int = 2) -> None:
        self._dir = store.dir
        self._files = [s.kept_file for s in store.manifest.shards]
        self._starts = [0, *accumulate(s.kept for s in store.manifest.shards)]
        self._cache: OrderedDict[int, list[Record]] = OrderedDict()
        self._keep = keep_shards
        #: Shard files parsed so far (a walk in order parses each once).
        self.reads = 0

    def __len__(self) -> int:
        return self._starts[-1]

    def _shard(self, k: int) -> list[Record]:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        records = list(read_shards(self._dir, [self._files[k]]))
        self.reads += 1
        self._cache[k] = records
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return records

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        n = len(self)
        if isinstance(index, slice):
            lo, hi, step = index.indices(n)
            if step != 1:
                return [self[i] for i in range(lo, hi, step)]
            out: list[Record] = []
            k = bisect_right(self._starts, lo) - 1
            while lo < hi:
                shard = self._shard(k)
                take = shard[lo - self._starts[k] : min(hi, self._starts[k + 1]) - self._starts[k]]
                out.extend(take)
                lo = self._starts[k + 1]
                k += 1
            return out
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"record {index} of {n}")
        k = bisect_right(self._starts, i) - 1
        return self._shard(k)[i - self._starts[k]]

    def __iter__(self) -> Iterator[Record]:
        for k in range(len(self._files)):
            yield from self._shard(k)
