"""Exact and MinHash near-duplicate decisions on Ray Data, equal to the sequential filters'.

A dedup filter describes how it groups records (`Filter.distributed`, a `DistributedDedup`);
this module knows no filter, only the two groupings. Locally such a filter walks the records
in order, each against an index of those kept before it. Here the decisions need no process that holds every record or
signature (the driver walks the stage's input, a lazy sequence over its shards when the caller
passes one, and puts entries in the object store a block at a time: `distill.ray.inputs`):

* every *entry* (a record that reaches the filter, a record restored from committed shards, a
  seed) gets a rank: seeds lowest, then restored records in the order the local `restore` adds
  them, then the stage's records in the order the local filter decides them (stage order; score
  order for `keep: best`). A lower rank is what "added to the index earlier" means locally.
* exact dedup (`ExactKeys`) groups entries by (a partition of) their key; each group decides
  its keys on its own, because an exact key's fate depends only on entries with that key.
* near dedup (`MinHashBands`) signs entries in parallel with the filter's own signer,
  groups one row per (entry, LSH band) by a hash of the band's values with Ray's groupby to
  find the pairs sharing a band (datasketch's candidates), brings both signatures of each pair
  together with one more grouped round, and keeps the pairs that really share a band (hash
  collisions are checked away) and whose estimated Jaccard reaches the threshold. The driver
  holds the candidate pairs (two integers each) and replays the sequential decisions over the
  pairs that reach the threshold (`resolve_near`); it never holds a stage record's signature.

Groupby keys are hash *partitions* (`part`), not the keys themselves: Ray's `map_groups` calls
Python once per group, which for millions of one-member LSH buckets costs minutes; one call per
partition sorts its rows with numpy instead. Ray, numpy and pyarrow are imported here, so this
module is only imported on the Ray path.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from distill.filter import Drop, ExactKeys, MinHashBands, MinHashSigner
from distill.records import Record

#: Ranks: seeds from SEED_BASE up, restored records just below 0, the stage's records from 0.
SEED_BASE = -(1 << 62)
SEED_LIMIT = SEED_BASE + (1 << 61)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xC2B2AE3D27D4EB4F)

ENTRY = pa.schema(
    [("rank", pa.int64()), ("text", pa.string()), ("missing", pa.string()), ("gen", pa.bool_()), ("label", pa.string())]
)
SIGS = pa.schema(
    [("rank", pa.int64()), ("sig", pa.binary()), ("label", pa.string()), ("gen", pa.bool_()), ("missing", pa.string())]
)
SIDES = pa.schema(
    [("part", pa.int64()), ("pair", pa.int64()), ("side", pa.int8()), ("sig", pa.binary()), ("label", pa.string())]
)
PAIRS = pa.schema([("cand", pa.int64()), ("rec", pa.int64())])
HITS = pa.schema([("pair", pa.int64()), ("est", pa.float64()), ("label", pa.string())])
KEYS = pa.schema(
    [
        ("part", pa.int64()),
        ("key", pa.string()),
        ("rank", pa.int64()),
        ("gen", pa.bool_()),
        ("label", pa.string()),
        ("missing", pa.string()),
    ]
)
DROPS = pa.schema([("rank", pa.int64()), ("reason", pa.string())])


@dataclass
class Entry:
    """What a dedup filter reads of one record: its field's text (or why it has none)."""

    rank: int
    text: str
    missing: str
    gen: bool
    label: str


def project(
    record: Record, read: Callable[[Record], str | Drop], against_seeds: Callable[[Record], bool], rank: int
) -> Entry:
    """The filter's view of a record, as its `DistributedDedup.read` and `against_seeds` give it."""

    text = read(record)
    if isinstance(text, Drop):
        return Entry(rank, "", text.reason, against_seeds(record), record.id)
    return Entry(rank, text, "", against_seeds(record), record.id)


def entry_table(entries: Iterable[Entry]) -> pa.Table:
    rows = list(entries)
    return pa.table(
        {
            "rank": [e.rank for e in rows],
            "text": [e.text for e in rows],
            "missing": [e.missing for e in rows],
            "gen": [e.gen for e in rows],
            "label": [e.label for e in rows],
        },
        schema=ENTRY,
    )


def part_of(values: np.ndarray, parts: int) -> np.ndarray:
    """A partition per integer (Fibonacci hashing), the same in every process."""
    with np.errstate(over="ignore"):
        h = values.astype(np.int64).view(np.uint64) * _GOLD
    return ((h >> np.uint64(40)) % np.uint64(parts)).astype(np.int64)


def _text_col(batch: dict[str, np.ndarray], name: str) -> list[str]:
    return [str(x) for x in batch[name]]


def key_hash(key: str) -> int:
    """A non-negative 63-bit integer per exact key, the same in every process (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little") >> 1


# --- exact dedup ---------------------------------------------------------------------------


def _exact_keys(batch: dict[str, np.ndarray], key: Callable[[str], str], parts: int) -> pa.Table:
    missing = _text_col(batch, "missing")
    keys = ["" if m else key(t) for t, m in zip(_text_col(batch, "text"), missing)]
    rank = batch["rank"].astype(np.int64)
    by_key = np.array([0 if m else key_hash(k) for k, m in zip(keys, missing)], dtype=np.int64)
    part = np.where([bool(m) for m in missing], part_of(rank, parts), part_of(by_key, parts))
    return pa.table(
        {
            "part": part,
            "key": keys,
            "rank": rank,
            "gen": batch["gen"].astype(bool),
            "label": _text_col(batch, "label"),
            "missing": missing,
        },
        schema=KEYS,
    )


def _exact_decide(group: dict[str, np.ndarray], reason: str) -> pa.Table:
    """The filter's sequential decisions over one partition's keys, every key on its own."""
    ranks: list[int] = []
    reasons: list[str] = []
    rank, key, gen = group["rank"], group["key"], group["gen"]
    label, missing = group["label"], group["missing"]
    for i in np.flatnonzero([bool(m) for m in missing]):
        if rank[i] >= 0:
            ranks.append(int(rank[i]))
            reasons.append(str(missing[i]))
    present = [i for i in range(len(rank)) if not missing[i]]
    present.sort(key=lambda i: (key[i], rank[i]))
    seed = first = None
    for n, i in enumerate(present):
        if n == 0 or key[i] != key[present[n - 1]]:
            seed = first = None
        r = int(rank[i])
        if r < SEED_LIMIT:
            seed = seed if seed is not None else str(label[i])
        elif r < 0:
            first = first if first is not None else str(label[i])
        elif gen[i] and seed is not None:
            ranks.append(r)
            reasons.append(reason.format(of=seed))
        elif first is None:
            first = str(label[i])
        else:
            ranks.append(r)
            reasons.append(reason.format(of=f"record {first}"))
    return pa.table({"rank": ranks, "reason": reasons}, schema=DROPS)


def exact_drops(entries: Any, grouping: ExactKeys, reason: str, parts: int) -> dict[int, str]:
    """Ranks of the stage's records that an exact-key dedup drops, with its reasons."""
    import ray.data

    keyed = entries.map_batches(partial(_exact_keys, key=grouping.key, parts=parts), batch_format="numpy")
    seed_keys = dict(grouping.seeds)
    if seed_keys:
        seeds = pa.table(
            {
                "part": part_of(np.array([key_hash(k) for k in seed_keys], dtype=np.int64), parts),
                "key": list(seed_keys),
                "rank": [SEED_BASE + j for j in range(len(seed_keys))],
                "gen": [False] * len(seed_keys),
                "label": list(seed_keys.values()),
                "missing": [""] * len(seed_keys),
            },
            schema=KEYS,
        )
        keyed = keyed.union(ray.data.from_arrow(seeds))
    out = keyed.groupby("part", num_partitions=parts).map_groups(
        partial(_exact_decide, reason=reason), batch_format="numpy"
    )
    return _drops(out)


def _drops(ds: Any) -> dict[int, str]:
    drops: dict[int, str] = {}
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        drops.update(zip(batch.column("rank").to_pylist(), batch.column("reason").to_pylist()))
    return drops


# --- near dedup ----------------------------------------------------------------------------

_SIGNERS: dict[str, MinHashSigner] = {}


def _signer(make: Callable[[], MinHashSigner], job: str) -> MinHashSigner:
    """One signer per worker process and dedup run: its caches (a word-hash cache, say) serve
    every batch of the run, as the local filter's do, and are dropped with the next run's."""

    if job not in _SIGNERS:
        _SIGNERS.clear()
        _SIGNERS[job] = make()
    return _SIGNERS[job]


def sign_entries(
    batch: dict[str, np.ndarray], tokens: Callable[[str], list[str]], signer: Callable[[], MinHashSigner], job: str = ""
) -> pa.Table:
    """Signatures of a batch of entries' texts, as the filter signs them locally."""

    missing = _text_col(batch, "missing")
    texts = [tokens(t) for t, m in zip(_text_col(batch, "text"), missing) if not m]
    sigs = iter(_signer(signer, job).sign(texts))
    blobs = [b"" if m else next(sigs).tobytes() for m in missing]
    return pa.table(
        {
            "rank": batch["rank"].astype(np.int64),
            "sig": blobs,
            "label": _text_col(batch, "label"),
            "gen": batch["gen"].astype(bool),
            "missing": missing,
        },
        schema=SIGS,
    )


def _missing(batch: dict[str, np.ndarray]) -> pa.Table:
    """Stage records without the field: dropped with MissingField's reason, never indexed."""
    pick = [bool(m) and r >= 0 for m, r in zip(batch["missing"], batch["rank"])]
    return pa.table(
        {"rank": batch["rank"][pick].astype(np.int64), "reason": list(batch["missing"][pick])}, schema=DROPS
    )


def _matrix(blobs: Any, num_perm: int) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype=np.uint32).reshape(len(blobs), num_perm)


def _bands(batch: dict[str, np.ndarray], bands: int, rows: int, num_perm: int, parts: int) -> dict[str, np.ndarray]:
    """One row per (entry, LSH band): a 64-bit hash of the band's index and values, and its
    partition. Hash collisions only add candidates, which `_estimate` checks band by band."""
    keep = np.array([not m for m in batch["missing"]], dtype=bool)
    sigs = _matrix(batch["sig"][keep], num_perm)
    n = len(sigs)
    values = sigs[:, : bands * rows].reshape(n * bands, rows)
    with np.errstate(over="ignore"):
        h = np.tile(np.arange(1, bands + 1, dtype=np.uint64), n) * _GOLD
        for c in range(rows):
            h = (h ^ values[:, c].astype(np.uint64)) * _MIX
    return {
        "part": ((h >> np.uint64(40)) % np.uint64(parts)).astype(np.int64),
        "key": h.view(np.int64),
        "rank": np.repeat(batch["rank"][keep].astype(np.int64), bands),
        "gen": np.repeat(batch["gen"][keep].astype(bool), bands),
    }


def _pairs(group: dict[str, np.ndarray]) -> pa.Table:
    """Pairs (earlier entry, stage record) in one bucket: what `MinHashLSH.query` returns for
    the record among the entries indexed before it. A seed pairs only with a generated record."""
    order = np.lexsort((group["rank"], group["key"]))
    key, rank, gen = group["key"][order], group["rank"][order], group["gen"][order]
    change = np.ones(len(key), dtype=bool)
    change[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], len(key))
    cand: list[np.ndarray] = []
    rec: list[np.ndarray] = []
    for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
        r, g = rank[s:e], gen[s:e]
        seeds = int(np.count_nonzero(r < SEED_LIMIT))
        for j in range(max(1, seeds), e - s):
            if r[j] >= 0:
                c = r[:j] if g[j] else r[seeds:j]
                cand.append(c)
                rec.append(np.full(len(c), r[j], dtype=np.int64))
    if not cand:
        return PAIRS.empty_table()
    both = np.unique(np.stack([np.concatenate(cand), np.concatenate(rec)], axis=1), axis=0)
    return pa.table({"cand": both[:, 0], "rec": both[:, 1]}, schema=PAIRS)


def _sides(batch: dict[str, np.ndarray], cand: np.ndarray, rec: np.ndarray, by_rec: np.ndarray, parts: int) -> pa.Table:
    """For each entry in a pair, a row (pair, side, signature) in the pair's partition: the
    join that brings both signatures of a pair together moves only entries that have pairs."""
    keep = np.array([not m for m in batch["missing"]], dtype=bool)
    rank, sig, label = batch["rank"][keep], batch["sig"][keep], batch["label"][keep]
    rec_sorted = rec[by_rec]
    out_pair, out_side, rows = [], [], []
    for which, (keys, index) in enumerate(((cand, None), (rec_sorted, by_rec))):
        lo, hi = np.searchsorted(keys, rank, "left"), np.searchsorted(keys, rank, "right")
        count = hi - lo
        row = np.repeat(np.arange(len(rank)), count)
        at = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
        out_pair.append(at if index is None else index[at])
        out_side.append(np.full(len(at), which, dtype=np.int8))
        rows.append(row)
    pair, side, row = np.concatenate(out_pair), np.concatenate(out_side), np.concatenate(rows)
    return pa.table(
        {
            "part": part_of(pair, parts),
            "pair": pair.astype(np.int64),
            "side": side,
            "sig": list(sig[row]),
            "label": list(label[row]),
        },
        schema=SIDES,
    )


def _estimate(group: dict[str, np.ndarray], num_perm: int, bands: int, rows: int, threshold: float) -> pa.Table:
    """Estimated Jaccard of each pair (the share of equal MinHash values, as `MinHashBands`
    defines it), for pairs that really share a band and reach the threshold."""
    order = np.lexsort((group["side"], group["pair"]))
    pair, sig, label = group["pair"][order], group["sig"][order], group["label"][order]
    a, b = _matrix(sig[0::2], num_perm), _matrix(sig[1::2], num_perm)
    equal = a == b
    est = equal.mean(axis=1)
    banded = equal[:, : bands * rows].reshape(len(a), bands, rows).all(axis=2).any(axis=1)
    hit = banded & (est >= threshold)
    return pa.table({"pair": pair[0::2][hit], "est": est[hit], "label": list(label[0::2][hit])}, schema=HITS)


@dataclass
class NearCosts:
    """Where the time of one near-dedup went (seconds), and how much it handled."""

    signatures: float = 0.0
    grouping: float = 0.0
    resolution: float = 0.0
    entries: int = 0
    bands: int = 0
    candidate_pairs: int = 0
    pairs_over_threshold: int = 0


def near_drops(entries: Any, grouping: MinHashBands, reason: str, parts: int, costs: NearCosts) -> dict[int, str]:
    """Ranks of the stage's records that a MinHash dedup drops, with its reasons.

    The driver holds the candidate pairs (two integers each) and their estimates, never a
    stage record or its signature."""
    import ray.data

    g = grouping
    num_perm = g.num_perm
    seed_labels = list(g.seed_labels)
    seed_sigs = g.seed_signatures
    started = time.perf_counter()
    job = uuid.uuid4().hex
    signed = entries.map_batches(partial(sign_entries, tokens=g.tokens, signer=g.signer, job=job), batch_format="numpy")
    if len(seed_labels):
        signed = signed.union(
            ray.data.from_arrow(
                pa.table(
                    {
                        "rank": [SEED_BASE + j for j in range(len(seed_labels))],
                        "sig": [s.tobytes() for s in seed_sigs],
                        "label": list(seed_labels),
                        "gen": [False] * len(seed_labels),
                        "missing": [""] * len(seed_labels),
                    },
                    schema=SIGS,
                )
            )
        )
    signed = signed.materialize()
    costs.signatures += time.perf_counter() - started
    started = time.perf_counter()
    drops: dict[int, str] = {}
    for batch in signed.map_batches(_missing, batch_format="numpy").iter_batches(
        batch_format="pyarrow", batch_size=None
    ):
        drops.update(zip(batch.column("rank").to_pylist(), batch.column("reason").to_pylist()))
    bands, rows = g.bands, g.rows
    found = (
        signed.map_batches(
            partial(_bands, bands=bands, rows=rows, num_perm=num_perm, parts=parts), batch_format="numpy"
        )
        .groupby("part", num_partitions=parts)
        .map_groups(_pairs, batch_format="numpy")
    )
    table = pa.concat_tables([PAIRS.empty_table(), *found.iter_batches(batch_format="pyarrow", batch_size=None)])
    both = np.unique(np.stack([table.column("cand").to_numpy(), table.column("rec").to_numpy()], axis=1), axis=0)
    cand, rec = both[:, 0].copy(), both[:, 1].copy()
    costs.entries += signed.count()
    costs.bands = bands
    costs.candidate_pairs += len(cand)
    hits = HITS.empty_table()
    if len(cand):
        sides = signed.map_batches(
            partial(_sides, cand=cand, rec=rec, by_rec=np.argsort(rec, kind="stable"), parts=parts),
            batch_format="numpy",
        )
        found = sides.groupby("part", num_partitions=parts).map_groups(
            partial(_estimate, num_perm=num_perm, bands=bands, rows=rows, threshold=g.threshold), batch_format="numpy"
        )
        hits = pa.concat_tables([hits, *found.iter_batches(batch_format="pyarrow", batch_size=None)])
    costs.grouping += time.perf_counter() - started
    costs.pairs_over_threshold += hits.num_rows
    started = time.perf_counter()
    pair = hits.column("pair").to_numpy()
    drops.update(
        resolve_near(rec[pair], cand[pair], hits.column("est").to_numpy(), hits.column("label").to_pylist(), reason)
    )
    costs.resolution += time.perf_counter() - started
    return drops


def resolve_near(rec: np.ndarray, cand: np.ndarray, est: np.ndarray, label: list[str], reason: str) -> dict[int, str]:
    """The filter's sequential decisions replayed over candidate pairs at or above the threshold only.

    Records are decided in rank order. A generated record with a seed among its pairs is a
    duplicate of the best such seed; otherwise of the best pair whose candidate was kept (a
    restored record, or a stage record decided earlier and not dropped); else it is kept. Best
    is the highest estimate, ties to the lowest rank (the earliest indexed), as `DistributedDedup`
    requires. Records without pairs are kept and never listed."""
    order = np.lexsort((cand, -est, rec))  # by record, then best first
    dropped: dict[int, str] = {}
    i, n = 0, len(order)
    while i < n:
        r = int(rec[order[i]])
        j = i
        while j < n and rec[order[j]] == r:
            j += 1
        seed = next((k for k in order[i:j] if cand[k] < SEED_LIMIT), None)
        if seed is not None:
            dropped[r] = reason.format(of=label[seed], jaccard=float(est[seed]))
        else:
            hit = next((k for k in order[i:j] if int(cand[k]) not in dropped), None)
            if hit is not None:
                dropped[r] = reason.format(of=f"record {label[hit]}", jaccard=float(est[hit]))
        i = j
    return dropped
