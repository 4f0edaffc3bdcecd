"""Deduplication filters: exact (normalised text) and, from datasketch, MinHash LSH
near-duplicates and the self-instruct ROUGE-L novelty check.

Dedup state spans the whole stage: a record is compared with every record kept before it
(in earlier batches too) and with the seed set, and on resume the state is rebuilt from the
committed shards through `restore`.
"""

from __future__ import annotations

import hashlib

from pydantic import Field

from distill.filter import KEEP, Decision, Drop, Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options
from distill.records import Record
from distill_plugins._text import MissingField, TextField, field_text, normalize


class ExactDedup(Filter):
    """Drop records whose normalised text (case, whitespace, punctuation) was already kept."""

    name = "exact-dedup"

    class Options(Options):
        field: TextField = Field("prompt", description="Dedupe on the prompt, the response, or both.")

    def __init__(self, options=None, **kwargs) -> None:
        super().__init__(options, **kwargs)
        self.seen: dict[str, str] = {}

    def key(self, record: Record) -> str:
        text = normalize(field_text(record, self.options.field))
        return hashlib.sha1(text.encode()).hexdigest()

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        out: list[Decision] = []
        for r in records:
            try:
                k = self.key(r)
            except MissingField as exc:
                out.append(exc.drop())
                continue
            first = self.seen.get(k)
            if first is None:
                self.seen[k] = r.id
                out.append(KEEP)
            else:
                out.append(Drop(f"duplicate: same normalised {self.options.field} as record {first}"))
        return out

    def restore(self, kept: list[Record]) -> None:
        for r in kept:
            self.seen.setdefault(self.key(r), r.id)


@hookimpl
def register_filters(register) -> None:
    register(ExactDedup)
