"""How every command reports an error: one line on stderr, secrets scrubbed, never markup."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from distill.errors import scrub

err = Console(stderr=True)


def print_error(error: Exception | str) -> None:
    # The message quotes user input (paths, values, names): printed as text, never as markup.
    err.print(f"[bold red]error:[/] {escape(scrub(str(error)))}", markup=True, highlight=False, soft_wrap=True)
