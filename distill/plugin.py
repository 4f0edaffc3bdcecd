"""What every plugin class declares, whatever its kind.

A plugin is a class with a `name` and an `Options` pydantic model; the core validates the
options from the config and instantiates the class. Nothing heavy is imported to *discover* a
plugin: heavy imports go inside `__init__` or the methods that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from distill import deprecated

if TYPE_CHECKING:
    from distill.records import Record


class Options(BaseModel):
    """Base for plugin options: unknown keys are config errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class PluginContext:
    """What the core tells a plugin about the run it is part of."""

    #: The config file's folder: relative paths in options resolve against it.
    base_dir: Path
    #: Whether long work may show progress (off under --quiet and when stderr is no terminal).
    progress: bool = True
    #: A folder of the run's output that belongs to this plugin instance and survives resume
    #: (a teacher's spent budget, say). None outside a pipeline run.
    state_dir: Path | None = None
    #: The run's seed records as loaded (before any stage), for plugins that compare with
    #: them: dedup against the seed set, self-instruct novelty. None outside a pipeline run.
    seeds: Callable[[], list[Record]] | None = None
    #: True when this instance only stands for replicas that run elsewhere (a stage with
    #: `executor: ray` runs its teacher in Ray actors): it must describe its model (identity,
    #: terms, sampling) and may check its options, but should not load weights or start an engine.
    remote_engine: bool = False
    #: The run's log, for what a plugin should tell the person running it in words: a batch
    #: submitted or still pending, a long wait. Scrubbed of secrets by the core's printer like
    #: every other line. None outside a pipeline run.
    log: Callable[[str], None] | None = None


#: The options base class, under a name the `Plugin.Options` attribute does not shadow.
BaseOptions = Options


class Plugin:
    #: The plugin kind, for messages (`teacher`, `ranker`, ...).
    kind: ClassVar[str] = "plugin"
    #: The name the config uses to pick this plugin.
    name: ClassVar[str]
    #: Validated options model; subclasses override it.
    Options: ClassVar[type[Options]] = Options
    #: Extra that installs this plugin's optional dependencies, for "pip install" hints.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Filled by the registry: which entry point and distribution registered the class.
    plugin_package: ClassVar[str | None] = None
    plugin_version: ClassVar[str | None] = None

    def __init__(self, options: BaseOptions | None = None, **kwargs: Any) -> None:
        self.options = options if options is not None else self.Options(**kwargs)

    def setup(self, context: PluginContext) -> None:
        """Called by the core once, before the stage's work and its progress bar: resolve
        relative paths and load engines here, so their own progress does not fight the bar."""
        self.context = context

    def close(self) -> None:
        """Release engines, files or connections. Called once when the stage ends."""


__getattr__ = deprecated.moved_names(__name__)
