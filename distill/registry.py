"""Discovering plugins: entry points -> pluggy -> a registry of classes per kind.

Each plugin module's registration hooks are called one at a time, so every registered class
is attributed to the entry point and distribution that provided it, and a plugin that fails
to import or register is reported by name while the others still load.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from distill import hookspecs
from distill.audit.base import AuditRule
from distill.errors import PluginError
from distill.evaluator import Evaluator
from distill.filter import Filter
from distill.plugin import Options as BaseOptions
from distill.plugin import Plugin
from distill.ranker import Ranker
from distill.task import Task
from distill.teacher import Teacher
from distill.trainer import Trainer

GROUP = "distill"
ENV_LOAD = "DISTILL_PLUGINS"  # comma-separated entry-point names to load; "" loads none
ENV_STRICT = "DISTILL_STRICT_PLUGINS"

KINDS: dict[str, str] = {
    "teacher": "register_teachers",
    "task": "register_tasks",
    "ranker": "register_rankers",
    "filter": "register_filters",
    "trainer": "register_trainers",
    "evaluator": "register_evaluators",
    "audit-rule": "register_audit_rules",
}


def _base_for(kind: str) -> type:
    return {
        "teacher": Teacher,
        "task": Task,
        "ranker": Ranker,
        "filter": Filter,
        "trainer": Trainer,
        "evaluator": Evaluator,
        "audit-rule": AuditRule,
    }[kind]


@dataclass
class PluginSpec:
    kind: str
    name: str
    cls: type[Plugin]
    plugin: str  # entry-point (or manual registration) name
    package: str | None
    version: str | None

    def options_schema(self) -> dict[str, Any]:
        return self.cls.Options.model_json_schema()


@dataclass
class LoadFailure:
    plugin: str
    package: str | None
    error: str


@dataclass
class PluginRegistry:
    pm: pluggy.PluginManager
    specs: dict[str, dict[str, PluginSpec]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[LoadFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def get(self, kind: str, name: str) -> PluginSpec:
        known = self.specs[kind]
        if name in known:
            return known[name]
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(sorted(known)) or "none"
        failed = "".join(f"\n  (plugin {f.plugin!r} failed to load: {f.error})" for f in self.failures)
        raise PluginError(f"unknown {kind} plugin {name!r}.{hint} Known {kind}s: {listed}.{failed}")

    def all(self) -> list[PluginSpec]:
        return [s for kind in KINDS for s in sorted(self.specs[kind].values(), key=lambda s: s.name)]

    def has_observers(self, hook: str) -> bool:
        return bool(getattr(self.pm.hook, hook).get_hookimpls())

    def notify(self, hook: str, **kwargs: Any) -> list[str]:
        """Fan an observer event out to every plugin; a failing observer is reported, not fatal."""
        problems: list[str] = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                msg = f"observer plugin {impl.plugin_name!r} failed in {hook}: {type(exc).__name__}: {exc}"
                problems.append(msg)
                print(f"warning: {msg}", file=sys.stderr)
        return problems


def make_registry(
    *,
    entry_points: bool = True,
    strict: bool | None = None,
    extra: list[tuple[str, Any]] | None = None,
) -> PluginRegistry:
    """Build a fresh plugin manager and registry (no globals: tests build one each).

    `extra` adds (name, module-or-object) pairs, as tests and embedding applications need.
    """
    if strict is None:
        strict = os.environ.get(ENV_STRICT, "") not in ("", "0", "false")
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    reg = PluginRegistry(pm=pm)
    origins: dict[str, tuple[str | None, str | None]] = {}

    if entry_points:
        _load_entry_points(reg, origins, strict)
    for name, obj in extra or []:
        _register(reg, name, obj, origins, (None, None), strict)
    while True:  # a misspelled hook is an error, not silence
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            pm.unregister(exc.plugin)
            _fail(reg, strict, name, origins.get(name, (None, None))[0], f"implements an unknown hook: {exc}")

    for kind, hook in KINDS.items():
        for impl in getattr(pm.hook, hook).get_hookimpls():
            package, version = origins.get(impl.plugin_name, (None, None))
            register = _registrar(reg, kind, impl.plugin_name, package, version, strict)
            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                _fail(reg, strict, impl.plugin_name, package, f"{hook} raised {type(exc).__name__}: {exc}")
    return reg


def _load_entry_points(reg: PluginRegistry, origins: dict, strict: bool) -> None:
    wanted = os.environ.get(ENV_LOAD)
    allow = None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}
    eps = sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name)
    seen: set[str] = set()
    read: dict[int, tuple[str | None, str | None]] = {}  # a package's METADATA is parsed on every access
    for ep in eps:
        if ep.name in seen or (allow is not None and ep.name not in allow):
            continue
        seen.add(ep.name)
        dist = getattr(ep, "dist", None)
        if id(dist) not in read:
            read[id(dist)] = (dist.name, dist.version) if dist else (None, None)
        origin = read[id(dist)]
        try:
            module = ep.load()
        except Exception as exc:
            _fail(reg, strict, ep.name, origin[0], f"import failed: {type(exc).__name__}: {exc}")
            continue
        _register(reg, ep.name, module, origins, origin, strict)


def _register(reg, name, obj, origins, origin, strict) -> None:
    try:
        reg.pm.register(obj, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        _fail(reg, strict, name, origin[0], f"registration failed: {exc}")
        return
    origins[name] = origin


def _fail(reg: PluginRegistry, strict: bool, plugin: str, package: str | None, error: str) -> None:
    if strict:
        raise PluginError(f"plugin {plugin!r} ({package or 'no package'}): {error}")
    reg.failures.append(LoadFailure(plugin, package, error))


def _registrar(reg: PluginRegistry, kind: str, plugin: str, package: str | None, version: str | None, strict: bool):
    base = _base_for(kind)

    def register(cls: Any) -> None:
        """A class of the wrong shape is reported like a plugin that fails to import (fatal only
        under strict loading), so one plugin's mistake cannot take `distill plugins` down with it.
        A duplicate name stays an error: which of the two a config means cannot be guessed."""
        problem = None
        name = getattr(cls, "name", None)
        opts = getattr(cls, "Options", None)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            problem = f"registered {cls!r} as a {kind}, but it is not a {base.__name__} subclass"
        elif not isinstance(name, str) or not name:
            problem = f"registered {cls.__name__} without a `name` class attribute"
        elif not (isinstance(opts, type) and issubclass(opts, BaseOptions)):
            problem = f"{cls.__name__}.Options must subclass distill.plugin.Options"
        if problem is not None:
            _fail(reg, strict, plugin, package, problem)
            return
        assert isinstance(name, str)
        existing = reg.specs[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"two plugins register a {kind} named {name!r}: {existing.plugin!r} "
                f"({existing.package or 'no package'}) and {plugin!r} ({package or 'no package'})"
            )
        cls.plugin_package = package
        cls.plugin_version = version
        reg.specs[kind][name] = PluginSpec(kind, name, cls, plugin, package, version)

    return register
