"""Placeholder: filled in by the filters issue."""

from __future__ import annotations

from distill.hookspecs import hookimpl


@hookimpl
def register_filters(register) -> None:
    pass
