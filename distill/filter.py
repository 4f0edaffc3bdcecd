"""Filters keep, drop (with a reason) or edit records, a batch at a time.

The simple case is datatrove's: override `check(record)` and return True, False, or
(False, reason). Stateful filters (dedup) override `filter_batch` and `restore`, so that a
resumed run rebuilds their state from committed records instead of forgetting it.

A drop reason reads `key: detail`; `distill inspect` counts drops per plugin and key, so
"near-duplicate: of record 3f2a (Jaccard 0.91)" is counted as `near-dedup: near-duplicate`.

A filter that must see every record of the stage before deciding any (keep the best-scored
of each duplicate cluster, say) returns True from `needs_whole_input` and gets them all in
`prepare`, before the first batch and again on resume. It must come first in its stage, or
it would choose among records an earlier filter is about to drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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

    def restore(self, kept: list[Record]) -> None:
        """Called on resume with records this filter already kept in committed shards."""

    def needs_whole_input(self) -> bool:
        return False

    def prepare(self, records: list[Record]) -> None:
        """Called once with the stage's whole input when `needs_whole_input()` is True."""
