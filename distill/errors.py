"""Errors that reach the user as a message and an exit code, never as a traceback."""

from __future__ import annotations


class DistillError(Exception):
    """Base class: the CLI prints the message and exits with `exit_code`."""

    exit_code = 1


class ConfigError(DistillError):
    exit_code = 2


class PluginError(DistillError):
    """A plugin failed to load, register or run; the message names the plugin."""


class TeacherUnavailable(PluginError):
    """A teacher gave up (circuit breaker open, budget spent): the stage stops cleanly,
    committed work is kept, and a later run resumes."""


class StoreError(DistillError):
    """The output directory is locked, corrupted or unwritable."""


class SeedError(DistillError):
    pass
