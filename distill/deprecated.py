"""Old import paths that still work for one release, with a DeprecationWarning.

Every module that moved into a package in 0.2.0 is listed here once; `import distill` installs
a finder that answers an old name with the module at its new path (the same module object, so
`isinstance` checks and module state are shared). Names that moved out of a module that stays
are listed in `MOVED_NAMES` and served by that module's deprecation `__getattr__`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

REMOVED_IN = "0.3.0"

#: old module path -> new module path
MOVED_MODULES: dict[str, str] = {
    "distill.audit_cli": "distill.cli.audit",
    "distill.audit_report": "distill.audit.report",
    "distill.audit_rules": "distill.audit.rules",
    "distill.audit_target": "distill.audit.target",
    "distill.cache_cli": "distill.cli.cache",
    "distill.cache_diff": "distill.cache.diff",
    "distill.calls": "distill.cache.calls",
    "distill.config_errors": "distill.config.errors",
    "distill.config_stages": "distill.config.stages",
    "distill.digests": "distill.stages.digests",
    "distill.embedded": "distill.models.embedded",
    "distill.eval_stage": "distill.stages.evaluate",
    "distill.export": "distill.io.export",
    "distill.inspect": "distill.io.inspect",
    "distill.lineage": "distill.training.lineage",
    "distill.model_card": "distill.cards.model",
    "distill.model_terms": "distill.models.terms",
    "distill.progress": "distill.io.progress",
    "distill.ray_dedup": "distill.ray.dedup",
    "distill.ray_filters": "distill.ray.filters",
    "distill.ray_rankers": "distill.ray.rankers",
    "distill.ray_replicas": "distill.ray.replicas",
    "distill.ray_shards": "distill.ray.shards",
    "distill.ray_teachers": "distill.ray.teachers",
    "distill.release": "distill.config.release",
    "distill.report_eval": "distill.report.eval",
    "distill.report_html": "distill.report.html",
    "distill.report_plots": "distill.report.plots",
    "distill.schema": "distill.config.schema",
    "distill.seeds": "distill.io.seeds",
    "distill.store": "distill.io.store",
    "distill.train_stage": "distill.stages.train",
    "distill.upstream": "distill.io.upstream",
}

#: module that stays -> {name that left it: module it lives in now}
MOVED_NAMES: dict[str, dict[str, str]] = {
    # `distill.stages` was a module of runners; it is the package of stage runners now.
    # The stage runners' 31-bit request seed (its value is pinned) is `distill.seeding.request_seed`.
    "distill.stages": {"derive_seed": "distill.seeding:request_seed"}
    | {name: "distill.executor.local" for name in ("StageContext", "run_filters", "run_export")}
    | {name: "distill.executor.teachers" for name in ("run_map", "run_expand", "run_rank")},
    "distill.models": {"derive_seed": "distill.seeding"},
    "distill.plugin": {"Trainer": "distill.trainer", "Evaluator": "distill.evaluator"},
    "distill.trainer": {
        "plan_hardware": "distill.training.hardware",
        "estimate_params": "distill.training.hardware",
        "last_checkpoint": "distill.training.checkpoints",
        "drop_incomplete_checkpoints": "distill.training.checkpoints",
        "resolve_student": "distill.models.folders",
        "train_chain": "distill.training.chain",
        "run_job": "distill.training.chain",
        "Job": "distill.training.chain",
        "JobStep": "distill.training.chain",
    },
}


def _warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old path will be removed in distill {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers each old name in `table` with the module at its new path."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.table:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = self.table[spec.name]
        _warn(spec.name, new, stacklevel=8)
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the old name's spec on the module: give it back its own.
        alias = module.__spec__
        if alias is not None and isinstance(alias.loader_state, importlib.machinery.ModuleSpec):
            module.__spec__ = alias.loader_state


def alias_modules(table: dict[str, str]) -> None:
    """Serve the old module paths in `table` (old -> new) from their new homes, with a warning.
    Also for plugin packages that regroup their own modules."""
    if not any(isinstance(f, _MovedModuleFinder) and f.table is table for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder(table))  # before editable-install finders


def install() -> None:
    alias_modules(MOVED_MODULES)


def moved_names(module: str) -> Callable[[str], Any]:
    """A module `__getattr__` serving the names that left `module`, with a warning."""
    names = MOVED_NAMES.get(module, {})

    def __getattr__(name: str) -> Any:
        if name in names:
            target, _, new_name = names[name].partition(":")
            new_name = new_name or name
            _warn(f"{module}.{name}", f"{target}.{new_name}", stacklevel=3)
            return getattr(importlib.import_module(target), new_name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
