"""The hooks a distill plugin can implement.

Registration hooks hand the core *classes*; the core instantiates them from config.
Observer hooks receive batches of plain dicts (JSON-serialisable), never one record at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("distill")
hookimpl = pluggy.HookimplMarker("distill")

Register = Callable[[type], None]


@hookspec
def register_teachers(register: Register) -> None:
    """Register Teacher classes: `register(MyTeacher)`."""


@hookspec
def register_tasks(register: Register) -> None:
    """Register Task classes (MapTask or ExpandTask)."""


@hookspec
def register_rankers(register: Register) -> None:
    """Register Ranker classes."""


@hookspec
def register_filters(register: Register) -> None:
    """Register Filter classes."""


@hookspec
def register_trainers(register: Register) -> None:
    """Register Trainer classes."""


@hookspec
def register_evaluators(register: Register) -> None:
    """Register Evaluator classes."""


@hookspec
def register_audit_rules(register: Register) -> None:
    """Register AuditRule classes (`distill.audit.base.AuditRule`): an organisation's own release policy."""


@hookspec
def records_generated(stage: str, records: list[dict[str, Any]]) -> None:
    """A committed batch of records a stage generated or kept."""


@hookspec
def records_dropped(stage: str, records: list[dict[str, Any]]) -> None:
    """A committed batch of records a stage rejected; the reason is the last event of each."""


@hookspec
def stage_finished(stage: str, stats: dict[str, Any]) -> None:
    """A stage finished: counts in, generated, kept, rejected, and rejections per reason."""
