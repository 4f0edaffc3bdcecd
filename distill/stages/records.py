"""Runners of the stages that write records: seeds, generate, rank, filter and export.

Each commits shards into its own store. A stage is skipped when its manifest is complete and
its digest (its own config plus the digest of its input) still matches; it resumes from its
last committed shard when it is incomplete; it is redone when its config or its input changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.audit.base import audit
from distill.cache.calls import TeacherCaller
from distill.cards.dataset import write_dataset_cards
from distill.config.loader import digest_view
from distill.config.stages import ExportStage, FilterStage, GenerateStage, RankStage, RayTeacherOptions
from distill.errors import ConfigError
from distill.executor.local import StageContext, run_export, run_filters
from distill.executor.teachers import run_expand, run_map, run_rank
from distill.io.progress import StageProgress
from distill.io.seeds import load_seeds
from distill.io.store import StageStore
from distill.io.upstream import UpstreamRecords
from distill.layout import EXPORT_DIR
from distill.ranker import Judge
from distill.ray.rankers import start_replicas as start_rankers
from distill.ray.teachers import start_replicas
from distill.stages.context import RunContext, StageResult
from distill.stages.digests import digest as stage_digest
from distill.stages.digests import file_digest, output_digest
from distill.task import ExpandTask, MapTask

#: A stage's work under its progress bar: the teacher calls' figures, if it made any.
Work = Callable[[StageContext, StageProgress], "dict[str, Any] | None"]


def stage_context(run: RunContext, store: StageStore, bar: StageProgress) -> StageContext:
    """What a record runner commits through: the store, the run seed, observers and progress."""
    return StageContext(
        stage=store.stage,
        store=store,
        run_seed=run.config.seed,
        notify=run.notify,
        advance=bar.advance,
        warnings=run.result.warnings,
        terms=run.terms_of,
    )


def open_store(run: RunContext, name: str, kind: str, digest: str) -> StageStore | None:
    """Open a stage's store; None when it is complete and current (nothing to do)."""
    store = StageStore(run.output, name, kind, digest)
    if store.stale:
        run.log(
            f"stage {name!r}: config or input changed since it was written; redoing it "
            f"(its old output is kept in {store.moved_to})"
        )
    removed = store.clean_debris()
    if removed and not store.stale:
        run.log(f"stage {name!r}: removed {len(removed)} uncommitted file(s) from an interrupted run")
    store.verify()
    if store.manifest.complete:
        run.result.stages.append(summary(store, skipped=True, seconds=0.0))
        run.live.finish("cached", **stage_figures(store))
        return None
    if store.next_index:
        run.log(f"stage {name!r}: resuming after {store.next_index} committed shard(s)")
    return store


def finish(
    run: RunContext,
    store: StageStore,
    started: float,
    calls: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Check that no record was lost, seal the manifest (with the stage's own `extra` figures),
    tell the observers."""
    totals = store.manifest.totals()
    if totals["in"] + totals["generated"] != totals["kept"] + totals["rejected"]:
        raise AssertionError(f"stage {store.stage!r} lost records: {totals}")
    stats: dict[str, Any] = {"totals": totals, "reasons": dict(store.manifest.reasons())}
    if calls is not None:
        stats["calls"] = calls
    stats.update(extra or {})
    store.finish(stats)
    run.registry.notify("stage_finished", stage=store.stage, stats=stats)
    run.result.stages.append(summary(store, skipped=False, seconds=time.monotonic() - started))
    run.live.finish("done", **stage_figures(store))


def stage_figures(store: StageStore) -> dict[str, Any]:
    """What a record stage's end event says: its counts, why records were rejected, and its
    teacher calls (requests, cache hits, tokens), from the sealed manifest."""
    m = store.manifest
    return {**m.totals(), "reasons": dict(m.reasons()), **(m.stats.get("calls") or {})}


def summary(store: StageStore, *, skipped: bool, seconds: float) -> StageResult:
    return StageResult(
        store.stage, store.kind, store.manifest.totals(), dict(store.manifest.reasons()), skipped, seconds
    )


def run_seeds(run: RunContext) -> StageStore:
    """The seeds stage: every configured source loaded into records, a malformed row rejected."""
    config = run.config
    srcs = run.loaded.raw.get("seeds", [])
    files = [file_digest(_resolve(run.base_dir, s.path)) for s in config.seeds]
    licenses = run.loaded.raw.get("licenses")  # they change every record's tag
    digest = stage_digest("seeds", srcs, files, *(["licenses", licenses] if licenses else []))
    store = open_store(run, "seeds", "seeds", digest)
    if store is None:
        return StageStore(run.output, "seeds", "seeds", digest)
    started = time.monotonic()
    with StageProgress("seeds", len(config.seeds), run.progress, run.live, "seed files") as bar:
        ctx = stage_context(run, store, bar)
        for i, src in enumerate(config.seeds):
            if i < store.next_index:
                continue
            loaded = load_seeds(src, run.base_dir)
            for w in loaded.warnings:
                run.warn(w)
            ctx.commit(
                loaded.records,
                loaded.rejected,
                inputs=len(loaded.records) + len(loaded.rejected),
                meta={"source": str(src.path)},
            )
            bar.advance(1)
    finish(run, store, started)
    return store


def record_digest(run: RunContext, i: int, stage: Any, upstream: StageStore) -> str:
    """What decides whether a committed record stage is still current."""
    raw = digest_view(run.loaded.raw)  # an environment value that changes redoes the stage
    raw_stage = raw["stages"][i]
    # Where a stage runs does not change what it decides: switching executors redoes nothing.
    raw_stage = {k: v for k, v in raw_stage.items() if k not in ("executor", "ray")}
    teacher_key = getattr(stage, "teacher", None)
    extra = raw.get("teachers", {}).get(teacher_key) if teacher_key else None
    # Both change the license tags a stage stamps (the models: its teacher's terms).
    models = raw.get("models") if teacher_key else None
    licenses = raw.get("licenses")
    return stage_digest(
        stage.kind,
        raw_stage,
        extra,
        run.config.seed,
        output_digest(upstream),
        *(["models", models] if models else []),
        *(["licenses", licenses] if licenses else []),
    )


def begin(run: RunContext, i: int, stage: Any, upstream: StageStore) -> tuple[StageStore, bool]:
    """The stage's store, and whether it is already complete and current (nothing to do)."""
    digest = record_digest(run, i, stage, upstream)
    store = open_store(run, stage.name, stage.kind, digest)
    if store is None:
        return StageStore(run.output, stage.name, stage.kind, digest), True
    return store, False


def work(run: RunContext, stage: Any, store: StageStore, started: float, total: int, body: Work) -> None:
    """`body` under the stage's progress bar, then the no-loss check and the sealed manifest."""
    with StageProgress(stage.name, total, run.progress, run.live) as bar:
        calls = body(stage_context(run, store, bar), bar)
    finish(run, store, started, calls)


def run_generate_stage(run: RunContext, i: int, stage: GenerateStage, upstream: StageStore) -> StageStore:
    """A task asks the stage's teacher; its answers become new or completed records."""
    store, done = begin(run, i, stage, upstream)
    if done:
        return store
    started, inputs = time.monotonic(), UpstreamRecords(upstream)  # read shard by shard as used
    on_ray = stage.executor == "ray"
    task = run.make_plugin("task", stage.task.plugin, f"stages[{i}].task")  # engines load before the bar
    pool = None
    try:
        teacher = run.teacher(stage.teacher, remote=on_ray)
        if on_ray:  # the same requests and records, answered by Ray actors
            pool = start_replicas(teacher, stage.ray or RayTeacherOptions(), stage.name, run.log)
            run.share_terms(pool, teacher)
            teacher = pool

        def body(ctx: StageContext, bar: StageProgress) -> dict[str, Any]:
            caller = TeacherCaller(teacher, run.request_cache(), on_progress=bar.calls)
            if isinstance(task, MapTask):
                run_map(ctx, task, caller, inputs, stage.batch_size)
            elif isinstance(task, ExpandTask):
                run_expand(ctx, task, caller, inputs, stage.batch_size)
            else:
                raise ConfigError(f"stages[{i}].task: {task.name!r} is neither a map nor an expand task")
            return caller.figures()

        work(run, stage, store, started, task.target() if isinstance(task, ExpandTask) else len(inputs), body)
    finally:
        for plugin in (task, pool):
            if plugin is not None:
                plugin.close()
    return store


def run_rank_stage(run: RunContext, i: int, stage: RankStage, upstream: StageStore) -> StageStore:
    """The ranker scores each record's candidates, asking the judge teacher if the stage has one."""
    store, done = begin(run, i, stage, upstream)
    if done:
        return store
    started, inputs = time.monotonic(), UpstreamRecords(upstream)
    on_ray = stage.executor == "ray"
    teacher = pool = ranker = None
    try:
        if stage.teacher is not None:
            teacher = run.teacher(stage.teacher, remote=on_ray)
        ranker = run.make_plugin(
            "ranker", stage.ranker.plugin, f"stages[{i}].ranker", remote_engine=on_ray and teacher is None
        )
        if on_ray and teacher is not None:  # the judge's replicas in Ray actors
            pool = start_replicas(teacher, stage.ray or RayTeacherOptions(), stage.name, run.log)
            run.share_terms(pool, teacher)
            teacher = pool
        elif on_ray:  # no judge teacher: the ranker's own replicas
            ranker = start_rankers(ranker, stage.ray or RayTeacherOptions(), stage.name, run.log)

        def body(ctx: StageContext, bar: StageProgress) -> dict[str, Any] | None:
            caller = judge = None
            if teacher is not None:
                caller = TeacherCaller(teacher, run.request_cache(), on_progress=bar.calls)
                judge = Judge(caller, f"stage {stage.name!r}")
            run_rank(ctx, ranker, judge, inputs, stage.batch_size)
            return caller.figures() if caller else None

        work(run, stage, store, started, len(inputs), body)
    finally:
        for plugin in (ranker, pool):  # a pool of ranker replicas closes its stand-in too
            if plugin is not None:
                plugin.close()
    return store


def run_filter_stage(run: RunContext, i: int, stage: FilterStage, upstream: StageStore) -> StageStore:
    """The filters keep, drop or edit each record, in order; on Ray Data with `executor: ray`."""
    store, done = begin(run, i, stage, upstream)
    if done:
        return store
    started, inputs = time.monotonic(), UpstreamRecords(upstream)

    def body(ctx: StageContext, bar: StageProgress) -> None:
        filters = [
            run.make_plugin("filter", f.plugin, f"stages[{i}].filters[{j}]") for j, f in enumerate(stage.filters)
        ]
        try:
            if stage.executor == "ray":  # the same decisions and shards, on a Ray cluster
                from distill.ray.filters import run_filters_ray  # numpy and pyarrow: only runs that ask

                run_filters_ray(ctx, filters, inputs, stage.batch_size, stage.ray, run.log)
            else:
                run_filters(ctx, filters, inputs, stage.batch_size)
        finally:
            for f in filters:
                f.close()

    work(run, stage, store, started, len(inputs), body)
    return store


def run_export_stage(run: RunContext, i: int, stage: ExportStage, upstream: StageStore) -> StageStore:
    """The records as a Hugging Face dataset folder, with cards audited against the release policy."""
    store, done = begin(run, i, stage, upstream)
    if not done:
        started, inputs = time.monotonic(), UpstreamRecords(upstream)
        path = run.output / EXPORT_DIR / stage.name
        work(run, stage, store, started, len(inputs), lambda ctx, bar: run_export(ctx, stage.format, inputs, path))
    write_cards(run, stage, store)
    return store


def write_cards(run: RunContext, stage: ExportStage, store: StageStore) -> None:
    """Audit the export against the config's `release:` policy and write its cards.

    Done even when the stage itself is current: the policy is not part of the stage's
    digest, and the cards must show the audit of the policy as configured now."""
    path = run.output / EXPORT_DIR / stage.name
    if not path.is_dir():
        return
    release = run.config.release
    if release.name is None:
        release = release.model_copy(update={"name": stage.name})
    records = list(store.kept())
    report = audit(
        records,
        release,
        run.licenses,
        run.audit_rules,
        target=f"export/{stage.name}",
        stage=stage.name,
        models=run.config.models,
    )
    write_dataset_cards(path, release.name or stage.name, records, report, run.licenses, stage.format)
    run.audit_warning(
        f"export {stage.name!r}", report, release.what, f"{path / 'README.md'} or run `distill audit {run.output}`"
    )


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path
