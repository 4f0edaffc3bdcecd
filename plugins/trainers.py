"""Placeholder: filled in by the trainers issue."""

from __future__ import annotations

from distill.hookspecs import hookimpl


@hookimpl
def register_trainers(register) -> None:
    pass
