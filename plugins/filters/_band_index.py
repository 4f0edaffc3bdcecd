"""A MinHash LSH index whose size does not grow with Python objects: what `near-dedup` uses
instead of datasketch's `MinHashLSH` once the input is large, with the same candidates.

Why this structure (measured on the bench corpus, 2 cores, num_perm 128, 25 bands of 5 rows):

* datasketch keeps one `bytes` key and one Python set per band and entry: about 1.3 GB peak RSS
  at 100k records and 3.6 GB at 300k with the records themselves. Here a band key is a 64-bit
  hash of the band's index and values, and each band's keys live in a few sorted numpy runs
  (key uint64 + entry id uint32: 12 bytes per entry and band, 300 bytes per kept entry, about
  270 MB for 900k kept entries), merged like a log-structured tree (a new run per batch, two
  runs merged when the older is less than twice the newer, so at most ~log2(batches) runs,
  and a merge touches one band at a time: its temporary copy is 1/25 of the table).
  A probe for a whole batch is two `searchsorted` per run and band, vectorised over the batch.
* SQLite (a B-tree on the band key) was rejected: its inserts and lookups go through Python
  per row, measured here at 2.3 us per insert and 9 us per lookup (250k rows, journal off),
  and a record needs 25 of each: ~4 minutes of lookups alone per 1M records, while signing
  and deciding 100k records takes 6.3 s here. An open-addressing hash table needs a load-factor reserve (2x)
  and a rehash that holds both tables; sorted runs need neither.
* Signatures (512 bytes per entry) are the other large part: below `spill_after` entries they
  are one numpy array; above it they go to an append-only file, and the few a batch needs
  (its candidates' ones) are read back with `os.pread`. A file read is not resident memory
  (peak RSS counts mmapped pages, so no mmap); the page cache serves rereads.
* Collisions: a 64-bit key collides with a given other band with probability 2^-64, so over
  10^7 stored keys and 10^8 probes (a 4M-record run) fewer than 10^-4 false candidates are
  expected; and every candidate is checked against its real signature (the pair must share a
  band's values exactly, as datasketch's key equality means), so a collision costs a read,
  never a different decision.

Measured (benchmarks/results/dedup.json, streamed through the local runner from real shards,
2 cores): 100k records 20 s / 237 MB peak RSS, 1M 250 s / 574 MB, 3M 898 s / 1,426 MB, with
precision 0.998 and recall 0.991; the datasketch path needed 1,302 MB for 100k in a list.

Entry ids are given in the order entries are added, as `SketchIndex` does; labels (what a drop
reason names) are kept as one UTF-8 blob with offsets, not one `str` per entry.
"""

from __future__ import annotations

import os
from array import array

import numpy as np

_GOLD = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xC2B2AE3D27D4EB4F)
_FIN1 = np.uint64(0xFF51AFD7ED558CCD)
_FIN2 = np.uint64(0xC4CEB9FE1A85EC53)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """A 64-bit key per (signature, band): shape (len(sigs), bands)."""
    n = len(sigs)
    values = sigs[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64) * _GOLD, (n, bands)).copy()
        for c in range(rows):
            h = (h ^ values[:, :, c]) * _MIX
        h ^= h >> np.uint64(33)
        h *= _FIN1
        h ^= h >> np.uint64(33)
        h *= _FIN2
        h ^= h >> np.uint64(33)
    return h


def expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [lo[i], hi[i]): (i repeated per element, every element), vectorised."""
    count = hi - lo
    total = int(count.sum())
    if not total:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    which = np.repeat(np.arange(len(lo), dtype=np.int64), count)
    starts = np.repeat(lo - (np.cumsum(count) - count), count)
    return which, starts + np.arange(total, dtype=np.int64)


class BandTable:
    """Per band, sorted runs of (key, entry id); a multimap, as entries may share a band."""

    def __init__(self, bands: int) -> None:
        self.runs: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(bands)]

    def add(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """`keys` (n, bands) of entries `ids` (n,), ids ascending."""
        if not len(ids):
            return
        ids = ids.astype(np.uint32)
        for j, runs in enumerate(self.runs):
            order = np.argsort(keys[:, j], kind="stable")
            runs.append((keys[order, j], ids[order]))
            while len(runs) > 1 and len(runs[-2][0]) < 2 * len(runs[-1][0]):
                (k1, i1), (k2, i2) = runs.pop(-2), runs.pop()
                k, i = np.concatenate([k1, k2]), np.concatenate([i1, i2])
                order = np.argsort(k, kind="stable")  # timsort: two sorted runs merge in O(n)
                runs.append((k[order], i[order]))

    def probe(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (query row, entry id) for each stored key equal to one of a query's band keys,
        deduplicated, sorted by query row then entry."""
        rows: list[np.ndarray] = []
        ents: list[np.ndarray] = []
        for j, runs in enumerate(self.runs):
            q = keys[:, j]
            for k, ids in runs:
                lo = np.searchsorted(k, q, "left")
                hi = np.searchsorted(k, q, "right")
                hit = np.flatnonzero(hi > lo)
                if len(hit):
                    which, at = expand(lo[hit], hi[hit])
                    rows.append(hit[which])
                    ents.append(ids[at].astype(np.int64))
        if not rows:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        pair = np.unique(np.concatenate(rows) << 32 | np.concatenate(ents))
        return pair >> 32, pair & 0xFFFFFFFF

    def nbytes(self) -> int:
        return sum(k.nbytes + i.nbytes for runs in self.runs for k, i in runs)


class SigStore:
    """Signatures by entry id: a numpy array while small, then an append-only file in `folder`."""

    def __init__(self, num_perm: int, spill_after: int, folder: str | None = None) -> None:
        self.num_perm = num_perm
        self.row = num_perm * 4
        self.spill_after = spill_after
        self.folder = folder
        self.mem = np.empty((0, num_perm), dtype=np.uint32)
        self.n = 0
        self.fd: int | None = None

    def __len__(self) -> int:
        return self.n

    def add(self, sigs: np.ndarray) -> None:
        sigs = np.ascontiguousarray(sigs, dtype=np.uint32)
        if self.fd is None and self.n + len(sigs) > self.spill_after:
            self._spill()
        if self.fd is not None:
            os.pwrite(self.fd, sigs.tobytes(), self.n * self.row)
        else:
            if self.n + len(sigs) > len(self.mem):
                grown = np.empty((max(2 * len(self.mem), self.n + len(sigs), 256), self.num_perm), dtype=np.uint32)
                grown[: self.n] = self.mem[: self.n]
                self.mem = grown
            self.mem[self.n : self.n + len(sigs)] = sigs
        self.n += len(sigs)

    def _spill(self) -> None:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="distill-signatures-", suffix=".u32", dir=self.folder)
        os.unlink(path)  # the open descriptor keeps it; nothing is left behind, even after a kill
        self.fd = fd
        if self.n:
            os.pwrite(fd, self.mem[: self.n].tobytes(), 0)
        self.mem = np.empty((0, self.num_perm), dtype=np.uint32)

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` (any order, repeats allowed)."""
        if self.fd is None:
            return self.mem[ids]
        fd, row = self.fd, self.row
        data = b"".join([os.pread(fd, row, int(e) * row) for e in ids.tolist()])
        return np.frombuffer(data, dtype=np.uint32).reshape(len(ids), self.num_perm)

    def all(self) -> np.ndarray:
        return self.get(np.arange(self.n)) if self.fd is not None else self.mem[: self.n]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Labels:
    """Strings by entry id, as one UTF-8 blob and an offset array."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.ends = array("q")

    def __len__(self) -> int:
        return len(self.ends)

    def extend(self, labels: list[str]) -> None:
        for s in labels:
            self.blob += s.encode("utf-8", "surrogatepass")
            self.ends.append(len(self.blob))

    def __getitem__(self, i: int) -> str:
        lo = self.ends[i - 1] if i else 0
        return self.blob[lo : self.ends[i]].decode("utf-8", "surrogatepass")

    def tolist(self) -> list[str]:
        return [self[i] for i in range(len(self))]


class BandIndex:
    """Entries (signature, band keys, label) that share-a-band queries find, like `MinHashLSH`
    with `params=(bands, rows)`: candidates are exactly the entries with a band's values equal."""

    def __init__(self, num_perm: int, bands: int, rows: int, spill_after: int, folder: str | None = None) -> None:
        self.bands, self.rows = bands, rows
        self.table = BandTable(bands)
        self.sigs = SigStore(num_perm, spill_after, folder)
        self.labels = Labels()

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, sigs: np.ndarray, labels: list[str], keys: np.ndarray | None = None) -> None:
        first = len(self)
        keys = band_keys(sigs, self.bands, self.rows) if keys is None else keys
        self.table.add(keys, np.arange(first, first + len(sigs)))
        self.sigs.add(sigs)
        self.labels.extend(labels)

    def matches(self, sigs: np.ndarray, keys: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
        """Pairs (row, entry, estimated Jaccard) of query rows and entries that really share a
        band and reach `threshold`, sorted by row."""
        if not len(self):
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0)
        q, e = self.table.probe(keys)
        return verify(q, e, sigs[q], self.sigs.get(e) if len(e) else sigs[q], self.bands, self.rows, threshold)

    def close(self) -> None:
        self.sigs.close()


def verify(
    q: np.ndarray, e: np.ndarray, a: np.ndarray, b: np.ndarray, bands: int, rows: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (q, e) whose signatures `a`, `b` share a band's values and whose estimated
    Jaccard (the share of equal values, as `SketchIndex.estimate`) is at least `threshold`."""
    if not len(q):
        return q, e, np.empty(0)
    equal = a == b
    est = equal.mean(axis=1)
    share = equal[:, : bands * rows].reshape(len(q), bands, rows).all(axis=2).any(axis=1)
    ok = share & (est >= threshold)
    return q[ok], e[ok], est[ok]


def best_per_row(q: np.ndarray, e: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of `q`, the entry with the highest estimate, ties to the lowest entry id."""
    if not len(q):
        return q, e, est
    order = np.lexsort((e, -est, q))
    q, e, est = q[order], e[order], est[order]
    first = np.ones(len(q), dtype=bool)
    first[1:] = q[1:] != q[:-1]
    return q[first], e[first], est[first]


def intra_pairs(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (later, earlier) of `rows` (ascending) that share a band key within one batch."""
    n, bands = keys.shape
    if n < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    flat = keys.ravel()
    owner = np.repeat(rows, bands)
    order = np.lexsort((owner, flat))
    flat, owner = flat[order], owner[order]
    same = flat[1:] == flat[:-1]
    if not same.any():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    start = np.ones(len(flat), dtype=bool)
    start[1:] = ~same
    starts = np.flatnonzero(start)
    sizes = np.diff(np.append(starts, len(flat)))
    later: list[np.ndarray] = []
    earlier: list[np.ndarray] = []
    for s, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
        members = owner[s : s + size]
        i, j = np.triu_indices(size, 1)
        later.append(members[j])
        earlier.append(members[i])
    pair = np.unique(np.concatenate(later) << 32 | np.concatenate(earlier))
    pair = pair[(pair >> 32) != (pair & 0xFFFFFFFF)]
    return pair >> 32, pair & 0xFFFFFFFF
