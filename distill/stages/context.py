"""What every stage runner gets from the pipeline: one public object, `RunContext`.

A runner (`distill.stages.runners.RUNNERS`) sees the run only through it: the config and its
output folder, the plugins it may make, the run's teachers (one started instance per
`teachers.KEY`), the request cache, the license registry and release policy, where to log
and warn, and the running stage's live figures (`run.live`: what the run's progress lines and
its `stage_end` event say). The pipeline owns nothing a runner needs besides this object, so a
new kind of stage is a new runner, not a new branch in the pipeline.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.audit.base import AuditReport, AuditRule, check_ack_rules
from distill.audit.rules import make_rules
from distill.cache.store import RequestCache, default_cache_path
from distill.config.loader import Config, LoadedConfig
from distill.errors import ConfigError, DistillError, PluginError
from distill.io.runlog import Listener, LiveStage, RunLog
from distill.io.store import StageStore
from distill.io.tracking import STAGE_TRACKERS, StageMetricsWriter, tensorboard_dir
from distill.layout import STATE_DIR
from distill.licenses import Registry
from distill.models.terms import Terms, resolve_terms, unknown_warning
from distill.plugin import PluginContext
from distill.records import Record
from distill.registry import PluginRegistry


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


class RunContext:
    """One run of a config, as the stage runners see it."""

    def __init__(
        self,
        loaded: LoadedConfig,
        registry: PluginRegistry,
        options: dict[str, Any],
        *,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        result: RunResult | None = None,
        events: Listener | None = None,
        log_interval: float | None = None,
    ) -> None:
        self.loaded = loaded
        self.registry = registry
        #: Validated plugin options by config location (`teachers.KEY`, `stages[i].task`, ...).
        self.options = options
        self.progress = progress
        self.log: Callable[[str], None] = log or (lambda msg: print(msg, file=sys.stderr))
        self.result = result or RunResult(output=loaded.config.output)
        #: The built-in license registry with the config's `licenses:` entries: in effect for the run.
        self.licenses: Registry = loaded.license_registry()
        #: Built-in and plugin audit rules, checked now so that a typo in `release:` fails early.
        self.audit_rules: list[AuditRule] = make_rules(registry, self.config.release.rules)
        check_ack_rules(self.config.release.acknowledge, [r.name for r in self.audit_rules])
        #: The store of the seeds stage, once it is open: `seed_records` reads it.
        self.seed_store: StageStore | None = None
        self._teachers: dict[str, Any] = {}
        self._terms: dict[int, Terms] = {}
        self._seed_cache: list[Record] | None = None
        self._cache: RequestCache | None = None
        tracking = self.config.tracking
        missing = tracking.missing_modules()
        if missing:
            raise ConfigError(f"tracking.report_to: not installed: {', '.join(missing)}")
        #: The run's TensorBoard folder (`OUT/tensorboard/RUN/`): the stages' figures and the trainers' logs.
        self.tracking_dir = tensorboard_dir(self.output, tracking.run_name or self.output.resolve().name)
        self._stage_metrics: StageMetricsWriter | None = None
        listeners = [events] if events is not None else []
        if any(t in STAGE_TRACKERS for t in tracking.report_to):
            name = tracking.run_name or self.output.resolve().name
            self._stage_metrics = StageMetricsWriter(tracking.report_to, self.tracking_dir, name, self.warn)
            listeners.append(self._stage_metrics)
        #: Stage start and end events, and progress events every `log_interval` seconds for `events`.
        self.events = RunLog(listeners, interval=log_interval if events is not None else None)

    @property
    def live(self) -> LiveStage:
        """The running stage's figures: runners and their helpers say how far they are here."""
        return self.events.live

    @property
    def config(self) -> Config:
        return self.loaded.config

    @property
    def output(self) -> Path:
        return self.config.output

    @property
    def base_dir(self) -> Path:
        return self.loaded.base_dir

    @property
    def teachers(self) -> dict[str, Any]:
        """The teachers started so far, by `teachers.KEY`."""
        return dict(self._teachers)

    def warn(self, message: str) -> None:
        """A warning of the run: logged now, and listed in the run's result."""
        self.log(f"warning: {message}")
        self.result.warnings.append(message)

    def make_plugin(self, kind: str, name: str, where: str, remote_engine: bool = False) -> Any:
        """A plugin instance set up for this run; a failure to start names the plugin and where."""
        spec = self.registry.get(kind, name)
        plugin = spec.cls(self.options[where])
        phase = self.live.phase_text
        self.live.phase(f"starting {kind} {name!r}")  # loading a model can take minutes
        try:
            state = self.output / STATE_DIR / re.sub(r"[^A-Za-z0-9_.-]+", "_", where)
            plugin.setup(
                PluginContext(
                    base_dir=self.base_dir,
                    progress=self.progress,
                    state_dir=state,
                    seeds=self.seed_records,
                    remote_engine=remote_engine,
                    log=self.log,
                )
            )
        except DistillError:
            raise
        except Exception as exc:
            raise PluginError(f"{kind} plugin {name!r} ({where}) failed to start: {type(exc).__name__}: {exc}") from exc
        finally:
            self.live.phase(phase)
        return plugin

    def teacher(self, key: str, remote: bool = False) -> Any:
        """The started teacher of `teachers.KEY`, one per run. `remote`: its replicas will run in
        Ray actors, so this one only describes the model (a later local stage starts its engine)."""
        if key not in self._teachers:
            ref = self.config.teachers[key]
            teacher = self.make_plugin("teacher", ref.plugin, f"teachers.{key}", remote_engine=remote)
            self._teachers[key] = teacher
            info = teacher.model_info()
            terms = resolve_terms(
                key=key,
                plugin=teacher.name,
                options=teacher.options,
                reported=info.license,
                model=info.model,
                config_models=self.config.models,
                reg=self.licenses,
                base_dir=self.base_dir,
            )
            self._terms[id(teacher)] = terms
            if not terms.known:
                self.warn(unknown_warning(key, teacher.name, info.model, terms))
            elif terms.model_says is not None:
                self.warn(
                    f"teacher {key!r}: its terms were {terms.how} as {terms.license}, but the model says "
                    f"{terms.model_says.license} ({terms.model_says.how}); `distill audit` asks you to "
                    "acknowledge the difference (rule terms-conflict)"
                )
        return self._teachers[key]

    def share_terms(self, stand_in: Any, teacher: Any) -> None:
        """`stand_in` (a pool of replicas) answers for `teacher`: it carries the same terms."""
        self._terms[id(stand_in)] = self._terms[id(teacher)]

    def terms_of(self, teacher: Any) -> Terms | None:
        """The terms resolved for a started teacher (None: use what it reports)."""
        return self._terms.get(id(teacher))

    def request_cache(self) -> RequestCache | None:
        """The run's request cache, opened on first use; None when the config turns it off."""
        if self._cache is None and self.config.cache.enabled:
            self._cache = RequestCache(self.config.cache.path or default_cache_path())
        return self._cache

    def seed_records(self) -> list[Record]:
        """The run's seed records, read once on first request: most stages never ask."""
        if self._seed_cache is None:
            self._seed_cache = list(self.seed_store.kept()) if self.seed_store is not None else []
        return [r.model_copy(deep=True) for r in self._seed_cache]

    def notify(self, stage: str, kept: list[Record], rejected: list[Record]) -> None:
        """Fan a stage's committed records out to the observer plugins."""
        reg = self.registry
        if kept and reg.has_observers("records_generated"):
            reg.notify("records_generated", stage=stage, records=[r.model_dump(mode="json") for r in kept])
        if rejected and reg.has_observers("records_dropped"):
            reg.notify("records_dropped", stage=stage, records=[r.model_dump(mode="json") for r in rejected])

    def audit_warning(self, where: str, report: AuditReport, subject: str, see: str) -> None:
        """A release the audit does not clear is a warning of the run, not a failure: the cards say why."""
        if not report.exit_code:
            return
        counts = report.counts()
        self.warn(
            f"{where}: the license audit for a {report.release.use} release of {subject} is "
            f"{report.verdict} ({counts['blocking']} blocking, {counts['acknowledge']} to acknowledge); "
            f"see {see}"
        )

    def close(self) -> None:
        """Close the run's teachers, its request cache and its tracker files."""
        try:
            for t in self._teachers.values():
                t.close()
        finally:
            if self._cache is not None:
                self._cache.close()
            if self._stage_metrics is not None:
                self._stage_metrics.close()
