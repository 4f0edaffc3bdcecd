"""Errors that reach the user as a message and an exit code, never as a traceback."""

from __future__ import annotations

import difflib

from distill.secrets import environment_secrets, replace_values

#: Environment variables whose values are secrets by their names; their values never reach a message.


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


def scrub(text: str) -> str:
    """Replace the value of every secret-named environment variable (`*_API_KEY`, `HF_TOKEN`,
    ...) in `text` with `$NAME`: the last guard before a message is printed or logged."""
    return replace_values(text, environment_secrets())


def suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
