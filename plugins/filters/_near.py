"""Near-dedup decisions over `BandIndex`: batch by batch (`keep: earliest`) or over the whole
input streamed twice (`keep: best`), the same decisions as the datasketch path in `dedup.py`.

A batch is decided with numpy as far as the decisions do not depend on each other: the band
keys of every record, the probes of the seed and kept indexes, and the pairs within the batch
that share a band (a record is compared with records kept earlier in the same batch too) are
all found and checked at once. Only records that have a pair at or above the threshold with
another record *of the batch* are decided one by one, in order, since whether that other
record is kept depends on its own decision.

For `keep: best`, `prepare` reads the input once to sign every record (signatures go to a
`SigStore`, so to a file when many), keeping per record only its id, its score and whether it
is generated; it then decides in score order, a chunk at a time, reading the chunk's
signatures back. The decisions are three small arrays (what a drop names, which entry, how
many MinHash values were equal), not a Decision per record; ids are found again through a
sorted array of 64-bit id hashes.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from distill_plugins.filters._band_index import (
    BandIndex,
    Labels,
    SigStore,
    band_keys,
    best_per_row,
    intra_pairs,
    verify,
)

#: Records signed and decided at once in `prepare` and `restore`.
CHUNK = 2048
#: What a decision names: nothing (kept), a seed, a kept entry, or the record lacks the field.
KEPT, SEED, ENTRY, MISSING = 0, 1, 2, 3


@dataclass
class BatchDecisions:
    """Per row of a batch: KEPT, SEED or ENTRY; the seed or entry id; the estimated Jaccard."""

    kind: np.ndarray
    of: np.ndarray
    est: np.ndarray


def decide(
    index: BandIndex, seeds: BandIndex | None, sigs: np.ndarray, gen: np.ndarray, threshold: float
) -> BatchDecisions:
    """Decide rows in order, each against the seeds (if `gen`), then the entries of `index` and
    the rows kept before it; the kept rows become entries len(index), len(index)+1, ... (the
    caller adds them). Best: the highest estimate, ties to the earliest entry."""
    n = len(sigs)
    kind = np.zeros(n, dtype=np.int8)
    of = np.zeros(n, dtype=np.int64)
    est = np.zeros(n)
    if not n:
        return BatchDecisions(kind, of, est)
    keys = band_keys(sigs, index.bands, index.rows)
    if seeds is not None and len(seeds) and gen.any():
        g = np.flatnonzero(gen)
        q, e, x = best_per_row(*seeds.matches(sigs[g], keys[g], threshold))
        kind[g[q]], of[g[q]], est[g[q]] = SEED, e, x
    live = np.flatnonzero(kind == KEPT)
    q, e, x = best_per_row(*index.matches(sigs[live], keys[live], threshold))
    kind[live[q]], of[live[q]], est[live[q]] = ENTRY, e, x
    later, earlier = intra_pairs(keys[live], live)
    later, earlier, x = verify(later, earlier, sigs[later], sigs[earlier], index.bands, index.rows, threshold)
    if not len(later):
        return BatchDecisions(kind, of, est)
    # rows with a pair inside the batch: decided in order, as the rows before them are
    order = np.lexsort((earlier, -x, later))
    later, earlier, x = later[order].tolist(), earlier[order].tolist(), x[order].tolist()
    intra = np.zeros(n, dtype=bool)  # `of` is a row of this batch, not an entry yet
    k = 0
    while k < len(later):
        i = later[k]
        while k < len(later) and later[k] == i:
            j, xj = earlier[k], x[k]
            k += 1
            if kind[j] != KEPT:
                continue
            # the best kept row (sorted best first); an index entry wins ties (it is earlier)
            if kind[i] == KEPT or (kind[i] == ENTRY and xj > est[i]):
                kind[i], of[i], est[i], intra[i] = ENTRY, j, xj, True
            while k < len(later) and later[k] == i:
                k += 1
    rank = np.cumsum(kind == KEPT) - 1 + len(index)
    of[intra] = rank[of[intra]]
    return BatchDecisions(kind, of, est)


def id_hash(record_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(record_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class Prepared:
    """`keep: best` decisions for a whole input, by record id, in arrays."""

    def __init__(self, ids: Labels, kind: np.ndarray, of: np.ndarray, equal: np.ndarray, missing: dict[int, str]):
        self.ids = ids
        self.kind, self.of, self.equal = kind, of, equal
        self.missing = missing
        hashes = np.array([id_hash(ids[i]) for i in range(len(ids))], dtype=np.uint64)
        self.order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[self.order]

    def positions(self, record_ids: list[str]) -> list[int | None]:
        """Each id's position in the input, None when it was not there."""
        h = np.array([id_hash(r) for r in record_ids], dtype=np.uint64)
        lo = np.searchsorted(self.hashes, h, "left").tolist()
        out: list[int | None] = []
        for rid, hv, at in zip(record_ids, h.tolist(), lo):
            found = None
            while at < len(self.hashes) and int(self.hashes[at]) == hv:
                p = int(self.order[at])
                if self.ids[p] == rid:
                    found = p
                    break
                at += 1
            out.append(found)
        return out


def prepare_best(
    records: Iterable[Any],
    sign: Callable[[list[Any]], tuple[list[Any], list[Any]]],
    score: Callable[[Any], float | None],
    generated: Callable[[Any], bool],
    make_index: Callable[[], BandIndex],
    seeds: BandIndex | None,
    num_perm: int,
    threshold: float,
    spill_after: int,
    folder: str | None,
) -> tuple[Prepared, BandIndex]:
    """Sign the input in one pass, then decide in `best_first` order; see the module docstring."""
    ids = Labels()
    scores = array("d")
    gens: list[bool] = []
    missing: dict[int, str] = {}
    store = SigStore(num_perm, spill_after, folder)
    try:
        chunk: list[Any] = []
        for r in records:
            chunk.append(r)
            if len(chunk) == CHUNK:
                _sign_chunk(chunk, sign, score, generated, ids, scores, gens, missing, store, num_perm)
                chunk = []
        _sign_chunk(chunk, sign, score, generated, ids, scores, gens, missing, store, num_perm)
        n = len(ids)
        s = np.frombuffer(scores, dtype=np.float64) if n else np.zeros(0)
        unscored = np.isnan(s)
        order = np.lexsort((np.arange(n), -np.where(unscored, 0.0, s), unscored))
        gen = np.array(gens, dtype=bool)
        kind = np.zeros(n, dtype=np.int8)
        of = np.zeros(n, dtype=np.int64)
        equal = np.zeros(n, dtype=np.int16)
        for p in missing:
            kind[p] = MISSING
        index = make_index()
        for k in range(0, n, CHUNK):
            rows = order[k : k + CHUNK]
            rows = rows[kind[rows] != MISSING]
            sigs = store.get(rows)
            d = decide(index, seeds, sigs, gen[rows], threshold)
            kind[rows], of[rows] = d.kind, d.of
            equal[rows] = np.rint(d.est * num_perm).astype(np.int16)
            kept = d.kind == KEPT
            index.add(sigs[kept], [ids[p] for p in rows[kept].tolist()])
    finally:
        store.close()
    return Prepared(ids, kind, of, equal, missing), index


def _sign_chunk(chunk, sign, score, generated, ids, scores, gens, missing, store, num_perm) -> None:
    if not chunk:
        return
    sigs, errors = sign(chunk)
    base = len(ids)
    ids.extend([r.id for r in chunk])
    for r in chunk:
        value = score(r)
        scores.append(float("nan") if value is None else value)
        gens.append(generated(r))
    rows = np.zeros((len(chunk), num_perm), dtype=np.uint32)
    for k, (sig, err) in enumerate(zip(sigs, errors)):
        if err is not None:
            missing[base + k] = err.drop().reason
        else:
            rows[k] = sig
    store.add(rows)
