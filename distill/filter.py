"""Filters keep, drop (with a reason) or edit records, a batch at a time.

The simple case is datatrove's: override `check(record)` and return True, False, or
(False, reason). Stateful filters (dedup) override `filter_batch` and `restore`, so that a
resumed run rebuilds their state from committed records instead of forgetting it.

A drop reason reads `key: detail`; `distill inspect` counts drops per plugin and key, so
"near-duplicate: of record 3f2a (Jaccard 0.91)" is counted as `near-dedup: near-duplicate`.

A filter that must see every record of the stage before deciding any (keep the best-scored
of each duplicate cluster, say) returns True from `needs_whole_input` and gets them all in
`prepare` (as a lazy sequence over the shards), before the first batch and again on resume. It must come first in its stage, or
it would choose among records an earlier filter is about to drop.

A dedup filter decides each record against every record kept before it, so an executor that
splits the stage across processes cannot run its `filter_batch` per shard. It can still run it
as ordinary grouping steps (datatrove's way: signatures, buckets, clusters) if the filter says
how it groups records: `distributed()` returns that description (`DistributedDedup`), and the
executor asks for it instead of knowing any filter by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from distill.plugin import Plugin
from distill.records import Record


@dataclass(frozen=True)
class Keep:
    pass


@dataclass(frozen=True)
class Drop:
    reason: str


@dataclass(frozen=True)
class Edit:
    """The record was changed (e.g. PII redacted); the new record replaces the old one."""

    record: Record
    reason: str


Decision = Keep | Drop | Edit
KEEP = Keep()


@dataclass(frozen=True)
class ExactKeys:
    """Duplicates are records with equal keys: each key's records are decided on their own,
    so an executor can group them by key across processes."""

    #: The key of a record's text (a digest of its normalised form, say). Must be picklable
    #: (a module-level function, or a `functools.partial` of one): workers compute it.
    key: Callable[[str], str]
    #: Keys of the seed set, each with how a drop reason names its seed.
    seeds: Mapping[str, str] = field(default_factory=dict)


class MinHashSigner(Protocol):
    def sign(self, token_lists: Sequence[Sequence[str]]) -> Any:
        """MinHash signatures: a uint32 array of shape (len(token_lists), num_perm)."""


@dataclass(frozen=True)
class MinHashBands:
    """Duplicates are records whose estimated Jaccard similarity (the share of equal MinHash
    values) reaches `threshold`, found among the pairs that share an LSH band, as datasketch's
    `MinHashLSH` with `params=(bands, rows)` finds them."""

    #: The tokens a record's text is signed by (shingled by the signer). Picklable, as `key`.
    tokens: Callable[[str], list[str]]
    #: Makes the signer; called once per worker process and run, so that a signer's caches
    #: serve every batch a worker signs. Picklable, as `key`.
    signer: Callable[[], MinHashSigner]
    num_perm: int
    bands: int
    rows: int
    threshold: float
    #: The seed set's signatures, shape (seeds, num_perm), and how a drop reason names each.
    seed_signatures: Any = None
    seed_labels: Sequence[str] = ()


@dataclass(frozen=True)
class DistributedDedup:
    """How a dedup filter decides, for an executor that runs it as grouping steps over the
    whole stage instead of calling `filter_batch` batch by batch.

    The decisions must be the ones `filter_batch` makes: records are decided in stage order
    (or in `order`), each dropped if it duplicates a seed (only when `against_seeds` says it
    is compared with them) or else a record kept before it, otherwise kept; a record `read`
    turns into a Drop is dropped with it and never compared. On resume the records the
    filter's `restore` would get count as kept before every new one. When several candidates
    match, the drop names the seed before any record, then the most similar, then the
    earliest.
    """

    grouping: ExactKeys | MinHashBands
    #: The text a record is compared by, or the Drop for a record that has none. Picklable.
    read: Callable[[Record], str | Drop]
    #: Whether a record is compared with the seed set (a seed's own record would match it).
    against_seeds: Callable[[Record], bool]
    #: The drop reason, formatted with `of` (a seed's label, or `record <id>`) and, for
    #: MinHash, `jaccard` (the estimate, a float).
    reason: str
    #: For a filter that `needs_whole_input`: the order in which the stage's records are
    #: decided (indices into the whole input); then nothing is restored on resume, as every
    #: record is decided again.
    order: Callable[[Sequence[Record]], list[int]] | None = None


class Filter(Plugin):
    kind: ClassVar[str] = "filter"

    def check(self, record: Record) -> bool | tuple[bool, str]:
        raise NotImplementedError  # pragma: no cover

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        """One decision per record, in order. Default: `check` each record."""
        out: list[Decision] = []
        for r in records:
            verdict = self.check(r)
            if isinstance(verdict, tuple):
                ok, reason = verdict
            else:
                ok, reason = verdict, self.name
            out.append(KEEP if ok else Drop(reason))
        return out

    def restore(self, kept: Sequence[Record]) -> None:
        """Called on resume with records this filter already kept in committed shards.

        `kept` is a read-only `Sequence` read from the shards as it is walked, not a list:
        iterate it (once or more, in order) to keep memory flat on a large stage; `len` and
        indexing work too, as they did on the list given before 0.2. Copy it with `list(kept)`
        only if you need to mutate it."""

    def needs_whole_input(self) -> bool:
        return False

    def prepare(self, records: Sequence[Record]) -> None:
        """Called once with the stage's whole input when `needs_whole_input()` is True.

        `records` is a read-only `Sequence` over the stage's input shards (parsed shard by
        shard as it is walked, a few shards cached), not a list, so a stage of millions of
        records need not be held at once: a filter that reads it in one or two passes in order
        (as `near-dedup` with `keep: best` does) stays bounded. `len`, indexing, slicing and
        repeated iteration work as on a list; `list(records)` gives one."""

    def distributed(self) -> DistributedDedup | None:
        """How this filter decides as grouping steps over the whole stage, for executors that
        split the stage across processes; called after `setup`. None (the default): such an
        executor runs `filter_batch` itself, per shard in parallel when the filter is
        stateless, in order in one process otherwise."""
        return None
