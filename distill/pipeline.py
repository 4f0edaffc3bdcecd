"""Running a config: seeds, then each stage in order, each reading the last one's output.

A stage is skipped when its manifest is complete and its digest (its own config plus the
digest of its input) still matches; it resumes from its last committed shard when it is
incomplete; it is redone when its config or its input changed.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from distill import __version__
from distill.config.loader import (EvaluateStage, ExportStage, FilterStage, GenerateStage, LoadedConfig, RankStage,
                            TrainStage, digest_view, validate_plugin_options)
from distill.config.stages import RayTeacherOptions
from distill.stages.digests import digest as stage_digest, file_digest, output_digest
from distill.errors import ConfigError, DistillError, PluginError, StoreError
from distill.licenses import active
from distill.models.terms import Terms, resolve_terms, unknown_warning
from distill.plugin import PluginContext
from distill.cache.calls import TeacherCaller
from distill.io.progress import StageProgress
from distill.records import Record
from distill.registry import PluginRegistry
from distill.ranker import Judge
from distill.stages.base import StageContext, run_expand, run_export, run_filters, run_map, run_rank
from distill.io.store import RunLock, StageStore, write_json
from distill.task import ExpandTask, MapTask
from distill.io.upstream import UpstreamRecords
from distill.io.seeds import load_seeds
from distill.audit.base import check_ack_rules
from distill.audit.rules import make_rules
from distill.audit.base import audit
from distill.cards.dataset import write_dataset_cards
from distill.cache.store import RequestCache, default_cache_path
from distill.stages.train import run_train_stage
from distill.stages.evaluate import run_evaluate_stage
from distill.ray.teachers import start_replicas
from distill.ray.rankers import start_replicas as start_rankers
from distill.ray.filters import run_filters_ray


@dataclass
class StageResult:
    stage: str
    kind: str
    totals: dict[str, int]
    reasons: dict[str, int]
    skipped: bool
    seconds: float


@dataclass
class RunResult:
    output: Path
    stages: list[StageResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: One per train stage (distill.stages.train.StudentResult).
    students: list[Any] = field(default_factory=list)
    #: One per evaluate stage (distill.stages.evaluate.EvalResult).
    evaluations: list[Any] = field(default_factory=list)


class Pipeline:
    def __init__(self, loaded: LoadedConfig, registry: PluginRegistry, *, progress: bool = True,
                 log=None) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.registry = registry
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.options = validate_plugin_options(loaded, registry)
        #: The built-in license registry with the config's `licenses:` entries: in effect for the run.
        self.licenses = loaded.license_registry()
        self._rules = self._audit_rules()
        self._teachers: dict[str, Any] = {}
        #: Resolved terms of each started teacher, by `id()` of the instance.
        self._terms: dict[int, Terms] = {}
        self._warnings: list[str] = []
        self._seed_store: StageStore | None = None
        self._seed_cache: list[Record] | None = None
        self._cache: Any = None

    @property
    def output(self) -> Path:
        return self.config.output

    def run(self, until: str | None = None) -> RunResult:
        if until is not None and until not in {"seeds", *(s.name for s in self.config.stages)}:
            raise ConfigError(f"no stage named {until!r}")
        result = RunResult(output=self.output)
        self._warnings = result.warnings
        try:
            self._check_writable()
        except OSError as exc:
            raise StoreError(f"cannot write the output folder {self.output}: {exc.strerror or exc}") from None
        with RunLock(self.output), active(self.licenses):
            write_json(self.output / "run.json", {
                "distill_version": __version__,
                "config": self.loaded.raw,  # uninterpolated: secrets stay `${VAR}`
                "plugins": [{"kind": s.kind, "name": s.name, "package": s.package, "version": s.version}
                            for s in self.registry.all()],
            })
            try:
                store = self._seed_store = self._seeds(result)
                for i, stage in enumerate(self.config.stages):
                    if until is not None and stage.name == until:
                        break
                    store = self._stage(i, stage, store, result)
            finally:
                for t in self._teachers.values():
                    t.close()
                if self._cache is not None:
                    self._cache.close()
        return result

    def _request_cache(self) -> Any:
        if self._cache is None and self.config.cache.enabled:

            self._cache = RequestCache(self.config.cache.path or default_cache_path())
        return self._cache

    def _check_writable(self) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        probe = self.output / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()

    def _ctx(self, store: StageStore, bar: StageProgress, result: RunResult) -> StageContext:
        return StageContext(stage=store.stage, store=store, run_seed=self.config.seed,
                            notify=self._notify, advance=bar.advance, warnings=result.warnings,
                            terms=self._license_of)

    def _notify(self, stage: str, kept: list[Record], rejected: list[Record]) -> None:
        reg = self.registry
        if kept and reg.has_observers("records_generated"):
            reg.notify("records_generated", stage=stage, records=[r.model_dump(mode="json") for r in kept])
        if rejected and reg.has_observers("records_dropped"):
            reg.notify("records_dropped", stage=stage, records=[r.model_dump(mode="json") for r in rejected])

    def _open(self, name: str, kind: str, digest: str, result: RunResult) -> StageStore | None:
        """Open a stage's store; None when it is complete and current (nothing to do)."""
        store = StageStore(self.output, name, kind, digest)
        if store.stale:
            self.log(f"stage {name!r}: config or input changed since it was written; redoing it "
                     f"(its old output is kept in {store.moved_to})")
        removed = store.clean_debris()
        if removed and not store.stale:
            self.log(f"stage {name!r}: removed {len(removed)} uncommitted file(s) from an interrupted run")
        store.verify()
        if store.manifest.complete:
            result.stages.append(self._summary(store, skipped=True, seconds=0.0))
            return None
        if store.next_index:
            self.log(f"stage {name!r}: resuming after {store.next_index} committed shard(s)")
        return store

    def _finish(self, store: StageStore, result: RunResult, started: float,
                calls: dict[str, Any] | None = None) -> None:
        totals = store.manifest.totals()
        if totals["in"] + totals["generated"] != totals["kept"] + totals["rejected"]:
            raise AssertionError(f"stage {store.stage!r} lost records: {totals}")
        stats: dict[str, Any] = {"totals": totals, "reasons": dict(store.manifest.reasons())}
        if calls is not None:
            stats["calls"] = calls
        store.finish(stats)
        self.registry.notify("stage_finished", stage=store.stage, stats=stats)
        result.stages.append(self._summary(store, skipped=False, seconds=time.monotonic() - started))

    @staticmethod
    def _summary(store: StageStore, *, skipped: bool, seconds: float) -> StageResult:
        return StageResult(store.stage, store.kind, store.manifest.totals(), dict(store.manifest.reasons()),
                           skipped, seconds)

    def _seeds(self, result: RunResult) -> StageStore:

        srcs = self.loaded.raw.get("seeds", [])
        files = [file_digest(_resolve(self.loaded.base_dir, s.path)) for s in self.config.seeds]
        licenses = self.loaded.raw.get("licenses")  # they change every record's tag
        digest = stage_digest("seeds", srcs, files, *(["licenses", licenses] if licenses else []))
        store = self._open("seeds", "seeds", digest, result)
        if store is None:
            return StageStore(self.output, "seeds", "seeds", digest)
        started = time.monotonic()
        with StageProgress("seeds", len(self.config.seeds), self.progress) as bar:
            ctx = self._ctx(store, bar, result)
            for i, src in enumerate(self.config.seeds):
                if i < store.next_index:
                    continue
                loaded = load_seeds(src, self.loaded.base_dir)
                for w in loaded.warnings:
                    self.log(f"warning: {w}")
                    result.warnings.append(w)
                ctx.commit(loaded.records, loaded.rejected, inputs=len(loaded.records) + len(loaded.rejected),
                           meta={"source": str(src.path)})
                bar.advance(1)
        self._finish(store, result, started)
        return store

    def _stage(self, i: int, stage: Any, upstream: StageStore, result: RunResult) -> StageStore:
        if isinstance(stage, TrainStage):  # trains on the exports; the records pass on unchanged

            result.students.append(run_train_stage(self, i, stage))
            return upstream
        if isinstance(stage, EvaluateStage):  # scores models on held-out data; the records pass on unchanged

            result.evaluations.append(run_evaluate_stage(self, i, stage, result.students))
            return upstream
        raw = digest_view(self.loaded.raw)  # an environment value that changes redoes the stage
        raw_stage = raw["stages"][i]
        # Where a stage runs does not change what it decides: switching executors redoes nothing.
        raw_stage = {k: v for k, v in raw_stage.items() if k not in ("executor", "ray")}
        teacher_key = getattr(stage, "teacher", None)
        extra = raw.get("teachers", {}).get(teacher_key) if teacher_key else None
        # Both change the license tags a stage stamps (the models: its teacher's terms).
        models = raw.get("models") if teacher_key else None
        licenses = raw.get("licenses")
        digest = stage_digest(stage.kind, raw_stage, extra, self.config.seed, output_digest(upstream),
                         *(["models", models] if models else []), *(["licenses", licenses] if licenses else []))
        store = self._open(stage.name, stage.kind, digest, result)
        if store is None:
            store = StageStore(self.output, stage.name, stage.kind, digest)
            if isinstance(stage, ExportStage):
                self._cards(stage, store)
            return store
        inputs = UpstreamRecords(upstream)  # read shard by shard as the stage uses them
        started = time.monotonic()
        total = len(inputs)
        task = teacher = ranker = pool = None
        on_ray = getattr(stage, "executor", "local") == "ray"
        try:  # plugins load their engines here, before the stage's bar starts
            if isinstance(stage, GenerateStage):
                task = self._make("task", stage.task.plugin, f"stages[{i}].task")
                teacher = self._teacher(stage.teacher, remote=on_ray)
                if isinstance(task, ExpandTask):
                    total = task.target()
            elif isinstance(stage, RankStage):
                if stage.teacher is not None:
                    teacher = self._teacher(stage.teacher, remote=on_ray)
                ranker = self._make("ranker", stage.ranker.plugin, f"stages[{i}].ranker",
                                    remote_engine=on_ray and teacher is None)
            if on_ray and teacher is not None:  # the same requests and records, answered by Ray actors

                pool = teacher = start_replicas(teacher, stage.ray or RayTeacherOptions(), stage.name, self.log)
                self._terms[id(pool)] = self._terms[id(pool.local)]
            elif on_ray and ranker is not None:  # no judge teacher: the ranker's own replicas

                ranker = start_rankers(ranker, stage.ray or RayTeacherOptions(), stage.name, self.log)
            stats = self._run_stage(i, stage, store, inputs, total, result, task, teacher, ranker)
        finally:
            for plugin in (task, ranker, pool):  # a pool of ranker replicas closes its stand-in too
                if plugin is not None:
                    plugin.close()
        self._finish(store, result, started, stats)
        if isinstance(stage, ExportStage):
            self._cards(stage, store)
        return store

    def _run_stage(self, i: int, stage: Any, store: StageStore, inputs: Sequence[Record], total: int,
                   result: RunResult, task: Any, teacher: Any, ranker: Any) -> dict[str, Any] | None:
        """The stage's runner under its progress bar; the teacher calls' figures, if any."""
        caller = None
        with StageProgress(stage.name, total, self.progress) as bar:
            ctx = self._ctx(store, bar, result)
            if isinstance(stage, GenerateStage):
                caller = TeacherCaller(teacher, self._request_cache(), on_progress=bar.calls)
                if isinstance(task, MapTask):
                    run_map(ctx, task, caller, inputs, stage.batch_size)
                elif isinstance(task, ExpandTask):
                    run_expand(ctx, task, caller, inputs, stage.batch_size)
                else:
                    raise ConfigError(f"stages[{i}].task: {task.name!r} is neither a map nor an expand task")
            elif isinstance(stage, RankStage):
                judge = None
                if stage.teacher is not None:
                    caller = TeacherCaller(teacher, self._request_cache(), on_progress=bar.calls)
                    judge = Judge(caller, f"stage {stage.name!r}")
                run_rank(ctx, ranker, judge, inputs, stage.batch_size)
            elif isinstance(stage, FilterStage):
                filters = [self._make("filter", f.plugin, f"stages[{i}].filters[{j}]")
                           for j, f in enumerate(stage.filters)]
                try:
                    if stage.executor == "ray":  # the same decisions and shards, on a Ray cluster

                        run_filters_ray(ctx, filters, list(inputs), stage.batch_size, stage.ray, self.log)
                    else:
                        run_filters(ctx, filters, inputs, stage.batch_size)
                finally:
                    for f in filters:
                        f.close()
            elif isinstance(stage, ExportStage):
                run_export(ctx, stage.format, inputs, self.output / "export" / stage.name)
        return caller.stats.as_dict() if caller else None

    def _audit_rules(self) -> list[Any]:
        """Built-in and plugin audit rules, checked at start so a typo in `release:` fails early."""

        rules = make_rules(self.registry, self.config.release.rules)
        check_ack_rules(self.config.release.acknowledge, [r.name for r in rules])
        return rules

    def _cards(self, stage: ExportStage, store: StageStore) -> None:
        """Audit the export against the config's `release:` policy and write its cards.

        Done even when the stage itself is current: the policy is not part of the stage's
        digest, and the cards must show the audit of the policy as configured now."""

        path = self.output / "export" / stage.name
        if not path.is_dir():
            return
        release = self.config.release
        if release.name is None:
            release = release.model_copy(update={"name": stage.name})
        records = list(store.kept())
        report = audit(records, release, self.licenses, self._rules,
                       target=f"export/{stage.name}", stage=stage.name, models=self.config.models)
        write_dataset_cards(path, release.name or stage.name, records, report, self.licenses, stage.format)
        self.audit_warning(f"export {stage.name!r}", report, release.what,
                           f"{path / 'README.md'} or run `distill audit {self.output}`")

    def audit_warning(self, where: str, report: Any, subject: str, see: str) -> None:
        """A release the audit does not clear is a warning of the run, not a failure: the cards say why."""
        if not report.exit_code:
            return
        counts = report.counts()
        msg = (f"{where}: the license audit for a {report.release.use} release of {subject} is {report.verdict} "
               f"({counts['blocking']} blocking, {counts['acknowledge']} to acknowledge); see {see}")
        self.log(f"warning: {msg}")
        self._warnings.append(msg)

    def _make(self, kind: str, name: str, where: str, remote_engine: bool = False) -> Any:
        spec = self.registry.get(kind, name)
        plugin = spec.cls(self.options[where])
        try:
            state = self.output / "state" / re.sub(r"[^A-Za-z0-9_.-]+", "_", where)
            plugin.setup(PluginContext(base_dir=self.loaded.base_dir, progress=self.progress, state_dir=state,
                                       seeds=self._seed_records, remote_engine=remote_engine))
        except DistillError:
            raise
        except Exception as exc:  # noqa: BLE001 - named, never a bare traceback
            raise PluginError(f"{kind} plugin {name!r} ({where}) failed to start: {type(exc).__name__}: {exc}") from exc
        return plugin

    def _seed_records(self) -> list[Record]:
        """Read once, on first request: most stages never ask."""
        if self._seed_cache is None:
            self._seed_cache = list(self._seed_store.kept()) if self._seed_store is not None else []
        return [r.model_copy(deep=True) for r in self._seed_cache]

    def _teacher(self, key: str, remote: bool = False) -> Any:
        """The started teacher of `teachers.KEY`, one per run. `remote`: its replicas will run in
        Ray actors, so this one only describes the model (a later local stage starts its engine)."""
        if key not in self._teachers:
            ref = self.config.teachers[key]
            teacher = self._make("teacher", ref.plugin, f"teachers.{key}", remote_engine=remote)
            self._teachers[key] = teacher
            info = teacher.model_info()
            terms = resolve_terms(key=key, plugin=teacher.name, options=teacher.options, reported=info.license,
                                  model=info.model, config_models=self.config.models, reg=self.licenses,
                                  base_dir=self.loaded.base_dir)
            self._terms[id(teacher)] = terms
            if not terms.known:
                msg = unknown_warning(key, teacher.name, info.model)
                self.log(f"warning: {msg}")
                self._warnings.append(msg)
        return self._teachers[key]

    def _license_of(self, teacher: Any) -> str | None:
        """The terms resolved for a started teacher (None: use what it reports)."""
        terms = self._terms.get(id(teacher))
        return terms.license if terms is not None else None


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path
