"""A filter stage on Ray Data, with the local runner's semantics (`distill.executor.local.run_filters`).

Same kept records in the same order, same drop reasons, same edits and events, same shards:
the driver commits every shard through `StageContext.commit`, in order, so a killed run resumes
from the last committed shard exactly as a local one does, and a stage begun under one executor
can be finished under the other.

How the stage's filters run, in order:

* a run of stateless filters (no `restore`, no `needs_whole_input`) is one `map_batches` over
  the records, a shard per batch, so each `filter_batch` call sees what it would see locally;
  an exception becomes an error row for its shard, and the driver, committing in order, raises
  the local runner's PluginError when it reaches that shard (the shards before it commit);
* a dedup filter that describes its grouping (`Filter.distributed`: exact keys or MinHash
  bands, as `exact-dedup` and `near-dedup` do) decides globally with Ray's grouping
  (`distill.ray.dedup`), against the seed set and against records restored from committed
  shards, whatever plugin it comes from; its decisions (drops by stage position) travel with
  the next batch step, or are applied while committing;
* the first filter that can do neither (any other stateful or whole-input filter, or one that
  cannot be pickled for the workers) runs on the driver, in order, shard by shard while the
  shards are committed, exactly as locally (restored on resume, prepared when it asks), and so
  does every filter after it.

Ray is imported only here and in `distill.ray.dedup`; `import distill` stays light.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from distill.errors import ConfigError, DistillError, PluginError
from distill.executor.local import Restored, StageContext, guarded
from distill.filter import DistributedDedup, ExactKeys, Filter
from distill.ray.cluster import connect, remote_cause
from distill.ray.dedup import NearCosts, exact_drops, near_drops, project
from distill.ray.inputs import entry_refs, input_dataset, walk
from distill.ray.shards import Decided, Row, dedup_entries, process_shard, run_segment
from distill.records import Record


@dataclass
class RayRun:
    """What happened where: the plan per filter, the cluster's CPUs and the time of each part."""

    plan: list[str]
    cpus: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    near: Any = None


Planned = tuple[str, Filter | DistributedDedup | None]


def plan(filters: list[Filter], where: str = "the filter stage") -> list[Planned]:
    """Per filter: `map` (in parallel, batch by batch, with the copy the workers get),
    `exact` / `near` (distributed dedup, with the filter's description of it) or `driver` (in
    order on the driver)."""
    out: list[Planned] = []
    for f in filters:
        d = guarded(f, "distributed", f.distributed, where)
        if d is not None:
            if d.order is not None and not f.needs_whole_input():
                raise PluginError(
                    f"filter plugin {f.name!r} gives a decision order over the whole input "
                    f"(DistributedDedup.order) but does not ask for it (needs_whole_input)"
                )
            out.append(("exact" if isinstance(d.grouping, ExactKeys) else "near", d))
        elif f.needs_whole_input() or type(f).restore is not Filter.restore:
            out.append(("driver", None))
        else:
            clone = _worker_copy(f)
            out.append(("map", clone) if clone is not None else ("driver", None))
    return out


def _worker_copy(f: Filter) -> Filter | None:
    """The filter as the workers get it: without the run's seed loader (a method of the
    pipeline), with its registry-given version; None when it cannot be pickled."""
    from ray import cloudpickle

    clone = copy.copy(f)
    context = getattr(f, "context", None)
    if context is not None:
        clone.context = dataclasses.replace(context, seeds=None)
    clone.plugin_version = f.plugin_version  # type: ignore[misc]
    clone.plugin_package = f.plugin_package  # type: ignore[misc]
    try:
        cloudpickle.dumps(clone)
    except Exception:
        return None
    return clone


@contextmanager
def _settings() -> Iterator[None]:
    """Ordered output (shards commit in order); the task-based sort shuffle for groupby (Ray
    2.60's default hash shuffle starts aggregator actors per groupby: seconds each on a small
    cluster, against a fraction of a second); no Ray progress bars or INFO lines under the
    stage's own bar. Restored afterwards."""
    import ray.data
    from ray.data.context import ShuffleStrategy

    ctx = ray.data.DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.shuffle_strategy
    logger = logging.getLogger("ray.data")
    level = logger.level
    ctx.execution_options.preserve_order, ctx.enable_progress_bars = True, False
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.shuffle_strategy = saved
        logger.setLevel(level)


def run_filters_ray(
    ctx: StageContext,
    filters: list[Filter],
    inputs: Sequence[Record],
    batch_size: int,
    options: Any = None,
    log: Callable[[str], None] = lambda m: None,
) -> RayRun:
    """The filter stage on Ray Data; see the module docstring. Same arguments as `run_filters`,
    plus the stage's `ray:` options."""
    for i, f in enumerate(filters):
        if f.needs_whole_input() and i:
            raise ConfigError(
                f"stage {ctx.stage!r}: filter {f.name!r} (as configured) chooses among all of the "
                f"stage's records, so it must be the stage's first filter (it is number {i + 1}); "
                f"move it first, or into a stage of its own after the others"
            )
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"stage {ctx.stage!r}: executor: ray needs Ray: pip install 'distill[ray]'")
    planned = plan(filters, f"stage {ctx.stage!r}")
    kinds = [k for k, _ in planned]
    split = kinds.index("driver") if "driver" in kinds else len(filters)
    run = RayRun(plan=kinds[:split] + ["driver"] * (len(filters) - split))
    if split < len(filters):
        log(
            f"stage {ctx.stage!r}: filter {filters[split].name!r} cannot run on Ray workers (it keeps state "
            f"only its local implementation rebuilds, or cannot be pickled); it and the filters after it run "
            f"in order on the driver"
        )
    if split == 0 and filters[0].needs_whole_input():
        guarded(filters[0], "prepare", lambda: filters[0].prepare(inputs), f"stage {ctx.stage!r}")
    store = ctx.store
    start = store.next_index
    # what each filter passed in committed shards, read from them as it is walked (not listed)
    position = {f.name: i for i, f in enumerate(filters)}
    restored = [Restored(store, position, i) for i in range(len(filters))] if start else None
    tail = [(i, filters[i]) for i in range(split, len(filters))]
    for i, f in tail:
        if restored is not None:
            f.restore(restored[i])
    batches = math.ceil(len(inputs) / batch_size)
    ctx.advance(min(len(inputs), start * batch_size))
    if start >= batches:
        return run
    if split == 0:
        _commit_from_driver(ctx, inputs, batch_size, start, batches, [], tail)
        return run
    started = time.perf_counter()
    run.cpus = connect(options)
    run.seconds["connect"] = time.perf_counter() - started
    try:
        with _settings():
            _run(ctx, filters, planned[:split], inputs, batch_size, start, batches, restored, tail, run)
    except DistillError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith("ray"):
            raise
        raise PluginError(
            f"filter stage {ctx.stage!r} failed on Ray: {remote_cause(exc)} (are distill and the "
            f"stage's filter plugins installed on every node?)"
        ) from exc
    return run


def _run(
    ctx: StageContext,
    filters: list[Filter],
    planned: list[Planned],
    inputs: Sequence[Record],
    batch_size: int,
    start: int,
    batches: int,
    restored: list[Restored] | None,
    tail: list[tuple[int, Filter]],
    run: RayRun,
) -> None:
    """The distributed part (`planned`: the filters before the first driver one), then the commits."""

    first = start * batch_size
    ds = None  # None: the records are still the driver's `inputs`
    pending: list[Decided] = []
    run.near = NearCosts()
    kinds = [k for k, _ in planned]
    i = 0
    while i < len(kinds):
        if kinds[i] in ("exact", "near"):
            started = time.perf_counter()
            dedup = planned[i][1]
            assert isinstance(dedup, DistributedDedup)
            drops = _dedup(dedup, inputs, first, ds, pending, restored[i] if restored is not None else None, run)
            pending.append(Decided(i, filters[i].name, filters[i].plugin_version, drops))
            run.seconds[f"{kinds[i]}-dedup[{i}]"] = time.perf_counter() - started
            i += 1
            continue
        j = i
        while j < len(kinds) and kinds[j] == "map":
            j += 1
        started = time.perf_counter()
        source = ds if ds is not None else input_dataset(inputs, first, batch_size)
        segment = [(k, f) for k in range(i, j) if isinstance(f := planned[k][1], Filter)]
        ds = source.map_batches(
            partial(run_segment, stage=ctx.stage, batch_size=batch_size, pending=pending, filters=segment),
            batch_size=None,
            batch_format="numpy",
        )
        pending = []
        if j < len(kinds):  # read again by the dedup after it: run it once
            ds = ds.materialize()
            run.seconds[f"map[{i}:{j}]"] = time.perf_counter() - started
        i = j
    started = time.perf_counter()
    if ds is None:
        _commit_from_driver(ctx, inputs, batch_size, start, batches, pending, tail)
    else:
        _commit_from_dataset(ctx, ds, batch_size, start, batches, len(inputs), pending, tail)
    run.seconds["commit"] = time.perf_counter() - started


def _dedup(
    dedup: DistributedDedup,
    inputs: Sequence[Record],
    first: int,
    ds: Any,
    pending: list[Decided],
    restored: Restored | None,
    run: RayRun,
) -> dict[int, str]:
    """One dedup filter's drops by stage position (positions from `first` on). Its entries: the
    live records (from the driver's `inputs`, or from `ds` once a batch step has changed them),
    and on resume the committed records its local `restore` would get. The driver walks its
    records in stage order and puts their entries in the object store a block at a time."""
    import numpy as np
    import ray.data

    started = time.perf_counter()
    read, against_seeds = dedup.read, dedup.against_seeds
    skip = frozenset(p for d in pending for p in d.drops)
    order: list[int] | None = None
    refs: list[Any] = []
    if dedup.order is not None:  # decided in its order over the whole input (it is the first filter)
        order = list(dedup.order(inputs))
        rank = np.empty(len(order), dtype=np.int64)
        rank[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
        refs = entry_refs(project(r, read, against_seeds, int(rank[p])) for p, r in enumerate(inputs))
    elif ds is None:
        live = (
            project(r, read, against_seeds, p)
            for p, r in enumerate(inputs[first:] if isinstance(inputs, list) else walk(inputs, first), first)
            if p not in skip
        )
        refs = entry_refs(live)
    size = len(order) if order is not None else len(inputs) - first
    if order is None and restored is not None:  # what `restore` gives the local filter, below every new rank
        count = len(restored)
        refs += entry_refs(project(r, read, against_seeds, k - count) for k, r in enumerate(restored))
        size += count
    entries = ray.data.from_arrow_refs(refs) if refs else None
    run.seconds["driver-entries"] = run.seconds.get("driver-entries", 0.0) + time.perf_counter() - started
    if ds is not None:
        live_ds = ds.map_batches(
            partial(dedup_entries, read=read, against_seeds=against_seeds, skip=skip), batch_format="numpy"
        )
        entries = live_ds if entries is None else live_ds.union(entries)
    if entries is None:
        return {}
    g = dedup.grouping
    if isinstance(g, ExactKeys):
        parts = max(2 * run.cpus, math.ceil(size / 100_000))
        drops = exact_drops(entries, g, dedup.reason, parts)
    else:
        parts = max(2 * run.cpus, math.ceil(size * g.bands / 250_000))
        drops = near_drops(entries, g, dedup.reason, parts, run.near)
    if order is not None:
        drops = {order[k]: reason for k, reason in drops.items()}
    return {p: reason for p, reason in drops.items() if p >= first}


def _commit(
    ctx: StageContext,
    b: int,
    live: list[Row],
    dropped: list[tuple[int, int, Record]],
    size: int,
    pending: list[Decided],
    tail: list[tuple[int, Filter]],
) -> None:
    kept, gone = process_shard(ctx.stage, b, live, pending, tail)
    rejected = [r for _, _, r in sorted(dropped + gone, key=lambda t: (t[0], t[1]))]
    ctx.commit([r for _, r in kept], rejected, inputs=size)
    ctx.advance(size)


def _commit_from_driver(
    ctx: StageContext,
    inputs: Sequence[Record],
    batch_size: int,
    start: int,
    batches: int,
    pending: list[Decided],
    tail: list[tuple[int, Filter]],
) -> None:
    """Commit shards of the driver's own records (no batch step changed them on the workers).
    Each is copied through its JSON, as shards store it: an equal record, in half the time of
    the local runner's deep copy, on the one process every shard passes through."""
    for b in range(start, batches):
        lo = b * batch_size
        chunk = [(lo + k, Record.model_validate_json(r.to_json())) for k, r in enumerate(inputs[lo : lo + batch_size])]
        _commit(ctx, b, chunk, [], len(chunk), pending, tail)


def _commit_from_dataset(
    ctx: StageContext,
    ds: Any,
    batch_size: int,
    start: int,
    batches: int,
    total: int,
    pending: list[Decided],
    tail: list[tuple[int, Filter]],
) -> None:
    """Commit shards in order as the last batch step yields them; an error row raises, as the
    local runner would have, once every shard before it is committed."""
    rows: list[tuple[int, str, int, str]] = []
    expected = start

    def flush() -> None:
        nonlocal expected
        b = rows[0][0] // batch_size
        size = min(batch_size, total - b * batch_size)
        if b != expected or len(rows) != size:
            raise AssertionError(f"shard {b}: {len(rows)} records back from Ray, expected shard {expected} with {size}")
        error = next((e for _, _, _, e in rows if e), None)
        if error:
            raise PluginError(error)
        live = [(p, Record.model_validate_json(rec)) for p, rec, at, _ in rows if at == -1]
        dropped = [(at, p, Record.model_validate_json(rec)) for p, rec, at, _ in rows if at != -1]
        _commit(ctx, b, live, dropped, size, pending, tail)
        rows.clear()
        expected += 1

    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        for p, rec, at, err in zip(batch["pos"].tolist(), batch["rec"], batch["at"].tolist(), batch["error"]):
            if rows and p // batch_size != rows[0][0] // batch_size:
                flush()
            rows.append((p, str(rec), at, str(err)))
    if rows:
        flush()
    if expected != batches:
        raise AssertionError(f"Ray returned shards up to {expected - 1} of {batches - 1}")
