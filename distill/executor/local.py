"""How each kind of stage turns its input into committed shards, in this process: the context
every runner commits through, and the runners of filter and export stages (the runners of
stages that ask a teacher are in `distill.executor.teachers`).

Every runner follows one rule: a batch is either committed whole (kept + rejected == what
entered + what was generated) or not at all, and batches are derived deterministically from
the input and the run seed, so a resumed run redoes exactly the batch that was in flight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from distill.errors import ConfigError, PluginError
from distill.filter import Drop, Edit, Filter, Keep
from distill.io.export import export_records
from distill.io.store import StageStore, read_shards
from distill.io.upstream import UpstreamRecords
from distill.licenses import effective_tag
from distill.ranker import Ranker
from distill.records import Generator, Record
from distill.task import Task

if TYPE_CHECKING:
    from distill.models.terms import Terms


@dataclass
class StageContext:
    stage: str
    store: StageStore
    run_seed: int
    notify: Callable[[str, list[Record], list[Record]], None]
    advance: Callable[[int], None] = lambda n: None
    warnings: list[str] = field(default_factory=list)
    #: The terms the core resolved for a teacher (see distill.models.terms); None: what it reports.
    terms: Callable[[Any], Terms | None] = lambda teacher: None

    def generator(self, teacher: Any, role: str = "generator") -> Generator:
        """The teacher's provenance entry, carrying the terms the core resolved for it, how they
        were found, and what the model itself says where that contradicts them."""
        g = teacher.generator(role=role)
        terms = self.terms(teacher)
        if terms is None:
            return g
        said = terms.model_says
        update = {
            "license": terms.license,
            "terms_source": terms.how,
            "model_says": f"{said.license} ({said.how})" if said is not None else None,
        }
        return g.model_copy(update=update)

    def commit(
        self,
        kept: list[Record],
        rejected: list[Record],
        *,
        inputs: int,
        generated: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        for r in kept + rejected:
            r.provenance.license = effective_tag(r)
        self.store.commit(kept, rejected, inputs=inputs, generated=generated, meta=meta)
        self.notify(self.stage, kept, rejected)


def drop_record(record: Record, stage: str, plugin: Task | Filter | Ranker | None, reason: str) -> Record:
    record.add_event(
        stage,
        "dropped",
        plugin=plugin.name if plugin else None,
        plugin_version=plugin.plugin_version if plugin else None,
        reason=reason,
    )
    return record


def guarded(plugin: Task | Filter | Ranker, method: str, call: Callable[[], Any], on: Record | str | None) -> Any:
    try:
        return call()
    except PluginError:
        raise
    except Exception as exc:
        on = f" on record {on.id}" if isinstance(on, Record) else (f" on {on}" if on else "")
        raise PluginError(
            f"{plugin.kind} plugin {plugin.name!r} failed in {method}{on}: {type(exc).__name__}: {exc}"
        ) from exc


def run_filters(ctx: StageContext, filters: list[Filter], inputs: Sequence[Record], batch_size: int) -> None:
    store = ctx.store
    for i, f in enumerate(filters):
        if f.needs_whole_input():
            if i:
                raise ConfigError(
                    f"stage {ctx.stage!r}: filter {f.name!r} (as configured) chooses among all of the "
                    f"stage's records, so it must be the stage's first filter (it is number {i + 1}); "
                    f"move it first, or into a stage of its own after the others"
                )
            # it chooses among all of them at once: it gets the lazy input (read shard by
            # shard as it walks it), not a list, so the runner does not hold the whole stage
            guarded(f, "prepare", lambda: f.prepare(inputs), f"stage {ctx.stage!r}")
    if store.next_index:
        _restore_filters(filters, store)
    batches = math.ceil(len(inputs) / batch_size)
    ctx.advance(min(len(inputs), store.next_index * batch_size))
    for b in range(store.next_index, batches):
        chunk = [r.model_copy(deep=True) for r in inputs[b * batch_size : (b + 1) * batch_size]]
        current, rejected = chunk, []
        for f in filters:
            where = f"batch {b} of stage {ctx.stage!r}" + (
                f" (records {current[0].id}..{current[-1].id})" if current else ""
            )
            decisions = guarded(f, "filter_batch", lambda: f.filter_batch(current), where)
            if len(decisions) != len(current):
                raise PluginError(
                    f"filter plugin {f.name!r} returned {len(decisions)} decisions for {len(current)} records"
                )
            survivors = []
            for r, d in zip(current, decisions):
                if isinstance(d, Keep):
                    r.add_event(ctx.stage, "kept", plugin=f.name, plugin_version=f.plugin_version)
                    survivors.append(r)
                elif isinstance(d, Drop):
                    rejected.append(drop_record(r, ctx.stage, f, d.reason))
                elif isinstance(d, Edit):
                    if d.record.id != r.id:
                        raise PluginError(f"filter plugin {f.name!r} changed a record's id ({r.id} -> {d.record.id})")
                    d.record.add_event(
                        ctx.stage, "edited", plugin=f.name, plugin_version=f.plugin_version, reason=d.reason
                    )
                    survivors.append(d.record)
                else:
                    raise PluginError(f"filter plugin {f.name!r} returned {d!r}, not Keep, Drop or Edit")
            current = survivors
        ctx.commit(current, rejected, inputs=len(chunk))
        ctx.advance(len(chunk))


def _restore_filters(filters: list[Filter], store: StageStore) -> None:
    """Give each filter the records that passed it in committed shards, so its state is whole.

    Each gets a `Restored` sequence over the shards, not a list: a filter that walks it once
    (as the dedup filters do) never holds the stage's records."""
    position = {f.name: i for i, f in enumerate(filters)}
    for i, f in enumerate(filters):
        f.restore(Restored(store, position, i))


class Restored(Sequence[Record]):
    """What filter `index` kept in committed shards: every kept record, then the rejected ones
    a later filter dropped (so they passed this one), in shard order. Iterating reads the
    shards as it goes; `len` and indexing read the rejected shards once and keep the records
    they select (a filter after the last drops none of them, so for it nothing is read)."""

    def __init__(self, store: StageStore, position: dict[str, int], index: int) -> None:
        self._position, self._index = position, index
        self._dir = store.dir  # the shards committed now: later commits are not what it kept
        self._rejected_files = [s.rejected_file for s in store.manifest.shards]
        self._kept = UpstreamRecords(store)
        self._later: list[Record] | None = None if index < max(position.values(), default=-1) else []

    def _passed(self) -> Iterator[Record]:
        if self._later is not None:
            yield from self._later
            return
        for r in read_shards(self._dir, self._rejected_files):
            ev = next((e for e in reversed(r.provenance.events) if e.action == "dropped"), None)
            if (self._position.get(ev.plugin or "", -1) if ev else -1) > self._index:
                yield r

    def _rejected(self) -> list[Record]:
        if self._later is None:
            self._later = list(self._passed())
        return self._later

    def __iter__(self) -> Iterator[Record]:
        yield from self._kept
        yield from self._passed()

    def __len__(self) -> int:
        return len(self._kept) + len(self._rejected())

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"record {index} of {n}")
        return self._kept[i] if i < len(self._kept) else self._rejected()[i - len(self._kept)]


def run_export(ctx: StageContext, fmt: str, inputs: Sequence[Record], path: Path) -> None:
    if ctx.store.next_index:
        return
    chunk = [r.model_copy(deep=True) for r in inputs]
    result = export_records(chunk, fmt, path)  # type: ignore[arg-type]
    for r in result.kept:
        r.add_event(ctx.stage, "kept", reason=f"exported as {fmt}")
    rejected = [drop_record(r, ctx.stage, None, reason) for r, reason in result.rejected]
    ctx.commit(result.kept, rejected, inputs=len(chunk), meta={"path": str(path), "format": fmt})
    ctx.advance(len(chunk))
