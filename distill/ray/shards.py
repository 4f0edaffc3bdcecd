"""What happens to one shard of a filter stage on Ray, on a worker or on the driver alike.

The local runner's inner loop (`distill.executor.local.run_filters`) is repeated here record for
record, events and error messages included, so the two executors cannot disagree; a test runs
both over the same input and compares every shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distill.errors import PluginError
from distill.executor.local import drop_record, guarded
from distill.filter import Drop, Edit, Filter, Keep
from distill.ray.dedup import entry_table, project
from distill.records import Record

#: What a stage position maps to while a shard is processed: (position, record).
Row = tuple[int, Record]


@dataclass
class Decided:
    """A dedup filter's decisions, made over the whole stage, applied as records pass."""

    index: int
    name: str
    version: str | None
    #: Stage position -> drop reason; every other record that reaches the filter is kept.
    drops: dict[int, str]


def apply_filter(stage: str, f: Filter, current: list[Row], where: str) -> tuple[list[Row], list[Row]]:
    """One filter over one shard's surviving records: `run_filters`' inner loop, the same
    events and the same errors. Returns the survivors and the dropped, in order."""
    records = [r for _, r in current]
    decisions = guarded(f, "filter_batch", lambda: f.filter_batch(records), where)
    if len(decisions) != len(current):
        raise PluginError(f"filter plugin {f.name!r} returned {len(decisions)} decisions for {len(current)} records")
    survivors: list[Row] = []
    dropped: list[Row] = []
    for (p, r), d in zip(current, decisions):
        if isinstance(d, Keep):
            r.add_event(stage, "kept", plugin=f.name, plugin_version=f.plugin_version)
            survivors.append((p, r))
        elif isinstance(d, Drop):
            dropped.append((p, drop_record(r, stage, f, d.reason)))
        elif isinstance(d, Edit):
            if d.record.id != r.id:
                raise PluginError(f"filter plugin {f.name!r} changed a record's id ({r.id} -> {d.record.id})")
            d.record.add_event(stage, "edited", plugin=f.name, plugin_version=f.plugin_version, reason=d.reason)
            survivors.append((p, d.record))
        else:
            raise PluginError(f"filter plugin {f.name!r} returned {d!r}, not Keep, Drop or Edit")
    return survivors, dropped


def process_shard(
    stage: str, b: int, current: list[Row], pending: list[Decided], filters: list[tuple[int, Filter]]
) -> tuple[list[Row], list[tuple[int, int, Record]]]:
    """Apply dedup decisions, then filters, to a shard's live records. Returns the survivors
    and the dropped as (filter index, position, record)."""
    dropped: list[tuple[int, int, Record]] = []
    for d in pending:
        survivors = []
        for p, r in current:
            reason = d.drops.get(p)
            if reason is None:
                r.add_event(stage, "kept", plugin=d.name, plugin_version=d.version)
                survivors.append((p, r))
            else:
                r.add_event(stage, "dropped", plugin=d.name, plugin_version=d.version, reason=reason)
                dropped.append((d.index, p, r))
        current = survivors
    for index, f in filters:
        where = f"batch {b} of stage {stage!r}" + (
            f" (records {current[0][1].id}..{current[-1][1].id})" if current else ""
        )
        current, gone = apply_filter(stage, f, current, where)
        dropped.extend((index, p, r) for p, r in gone)
    return current, dropped


def shard_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("pos", pa.int64()), ("rec", pa.string()), ("at", pa.int32()), ("error", pa.string())])


def run_segment(
    batch: dict[str, Any], stage: str, batch_size: int, pending: list[Decided], filters: list[tuple[int, Filter]]
) -> Any:
    """Worker side of a run of stateless filters: each shard in the batch, on its own."""
    import numpy as np
    import pyarrow as pa

    pos = batch["pos"]
    recs = list(batch["rec"])
    at = batch["at"].astype(np.int32)
    errors = [str(e) for e in batch["error"]]
    row_of = {int(p): i for i, p in enumerate(pos)}
    shard = pos // batch_size
    for b in dict.fromkeys(shard.tolist()):
        rows = np.flatnonzero(shard == b)
        if any(errors[i] for i in rows):
            continue
        live = [(int(pos[i]), Record.model_validate_json(recs[i])) for i in rows if at[i] == -1]
        try:
            survivors, dropped = process_shard(stage, b, live, pending, filters)
        except PluginError as exc:
            for i in rows:
                errors[i] = str(exc) or type(exc).__name__
            continue
        for p, r in survivors:
            recs[row_of[p]] = r.to_json()
        for index, p, r in dropped:
            recs[row_of[p]] = r.to_json()
            at[row_of[p]] = index
    return pa.table({"pos": pos, "rec": recs, "at": at, "error": errors}, schema=shard_schema())


def dedup_entries(
    batch: dict[str, Any],
    read: Callable[[Record], str | Drop],
    against_seeds: Callable[[Record], bool],
    skip: frozenset[int],
) -> Any:
    """Worker side: what a dedup filter reads of each live record (rank = stage position)."""

    return entry_table(
        project(Record.model_validate_json(rec), read, against_seeds, int(p))
        for p, rec, at, err in zip(batch["pos"], batch["rec"], batch["at"], batch["error"])
        if at == -1 and not err and int(p) not in skip
    )


def restore_lists(filters: list[Filter], kept: list[Record], rejected: list[Record]) -> list[list[Record]]:
    """Per filter, what the local runner's `_restore_filters` hands its `restore`, in that order."""
    position = {f.name: i for i, f in enumerate(filters)}
    dropped_at: list[tuple[int, Record]] = []
    for r in rejected:
        ev = next((e for e in reversed(r.provenance.events) if e.action == "dropped"), None)
        dropped_at.append((position.get(ev.plugin or "", -1) if ev else -1, r))
    return [kept + [r for at, r in dropped_at if at > i] for i in range(len(filters))]
