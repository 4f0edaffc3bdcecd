"""Running a config: seeds, then each stage in order, each reading the last one's output.

`Pipeline` holds the run's lock and its `RunContext` (the one object every stage runner gets)
and hands each stage to the runner of its kind (`distill.stages.runners.RUNNERS`), inside the
run log's stage (`distill.io.runlog`), so that every stage, whatever its kind, has a start and
an end event. What a stage does, and when it is skipped, resumed or redone, is its runner's
business.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from distill import __version__
from distill.config.loader import LoadedConfig, validate_plugin_options
from distill.errors import ConfigError, StoreError
from distill.io.runlog import Listener
from distill.io.store import RunLock, write_json
from distill.io.tracking import STAGE_TRACKERS
from distill.layout import RUN_FILE
from distill.licenses import Registry, active
from distill.registry import PluginRegistry
from distill.stages.context import RunContext, RunResult, StageResult
from distill.stages.records import run_seeds
from distill.stages.runners import RUNNERS

__all__ = ["Pipeline", "RunResult", "StageResult"]


class Pipeline:
    def __init__(
        self,
        loaded: LoadedConfig,
        registry: PluginRegistry,
        *,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        events: Listener | None = None,
        log_interval: float | None = None,
    ) -> None:
        """`events` receives each stage's start and end (`distill.io.runlog.RunEvent`), and its
        progress every `log_interval` seconds while it runs (None: never)."""
        self.loaded = loaded
        self.config = loaded.config
        self.registry = registry
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.events = events
        self.log_interval = log_interval
        self.options = validate_plugin_options(loaded, registry)
        #: The context of the last (or current) run; a new one is made per `run`.
        self.context = self._context()

    def _context(self) -> RunContext:
        return RunContext(
            self.loaded,
            self.registry,
            self.options,
            progress=self.progress,
            log=self.log,
            events=self.events,
            log_interval=self.log_interval,
        )

    @property
    def output(self) -> Path:
        return self.config.output

    @property
    def licenses(self) -> Registry:
        """The built-in license registry with the config's `licenses:` entries."""
        return self.context.licenses

    def run(self, until: str | None = None) -> RunResult:
        if until is not None and until not in {"seeds", *(s.name for s in self.config.stages)}:
            raise ConfigError(f"no stage named {until!r}")
        run = self.context = self._context()
        try:
            self._check_writable()
        except OSError as exc:
            raise StoreError(f"cannot write the output folder {self.output}: {exc.strerror or exc}") from None
        with RunLock(self.output), active(run.licenses):
            write_json(
                self.output / RUN_FILE,
                {
                    "distill_version": __version__,
                    "config": self.loaded.raw,  # uninterpolated: secrets stay `${VAR}`
                    "plugins": [
                        {"kind": s.kind, "name": s.name, "package": s.package, "version": s.version}
                        for s in self.registry.all()
                    ],
                },
            )
            others = [t for t in self.config.tracking.report_to if t not in STAGE_TRACKERS]
            if others:
                run.log(
                    f"tracking: the trainers' metrics go to {', '.join(others)}; the stages' figures "
                    f"are written for {', '.join(STAGE_TRACKERS)} only"
                )
            try:
                with run.events.stage("seeds", "seeds"):
                    store = run.seed_store = run_seeds(run)
                for i, stage in enumerate(self.config.stages):
                    if until is not None and stage.name == until:
                        break
                    with run.events.stage(stage.name, stage.kind):
                        store = RUNNERS[stage.kind](run, i, stage, store)
            finally:
                run.close()
        return run.result

    def _check_writable(self) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        probe = self.output / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
