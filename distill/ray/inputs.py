"""What the Ray filter executor's driver hands the cluster: the stage's records and a dedup
filter's entries, made a block at a time from a lazy input and put in the object store as
each block is full, so the driver never holds every record, its JSON or its entry at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from distill.ray.dedup import Entry, entry_table
from distill.ray.shards import shard_schema
from distill.records import Record


def input_dataset(inputs: Sequence[Record], first: int, batch_size: int) -> Any:
    """The uncommitted records as a dataset of one block per shard. Each block goes to the
    object store as it is made, so the driver holds one shard's JSON at a time."""
    import pyarrow as pa
    import ray
    import ray.data

    refs: list[Any] = []
    for lo in range(first, len(inputs), batch_size):
        chunk = inputs[lo : lo + batch_size]
        refs.append(
            ray.put(
                pa.table(
                    {
                        "pos": range(lo, lo + len(chunk)),
                        "rec": [r.to_json() for r in chunk],
                        "at": [-1] * len(chunk),
                        "error": [""] * len(chunk),
                    },
                    schema=shard_schema(),
                )
            )
        )
    return ray.data.from_arrow_refs(refs)


def entry_refs(entries: Iterator[Entry], step: int = 2000) -> list[Any]:
    """Entry tables of `step` entries, each put in the object store as soon as it is full."""
    import ray

    refs: list[Any] = []
    chunk: list[Entry] = []
    for e in entries:
        chunk.append(e)
        if len(chunk) == step:
            refs.append(ray.put(entry_table(chunk)))
            chunk = []
    if chunk:
        refs.append(ray.put(entry_table(chunk)))
    return refs


def walk(inputs: Sequence[Record], first: int) -> Iterator[Record]:
    """Records from `first` on, a slice at a time (a lazy input reads each shard once)."""
    for lo in range(first, len(inputs), 1000):
        yield from inputs[lo : lo + 1000]
