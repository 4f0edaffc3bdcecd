"""`distill cache stats|explain`: what the request cache holds, and why requests missed it.

`explain` exists because a cache that silently stops hitting (a changed max_tokens, a new
model revision, an edited system prompt) costs a whole run's teacher calls, and the user
cannot see why without it.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from distill.cache.store import RequestCache, default_cache_path
from distill.errors import DistillError

if TYPE_CHECKING:
    from distill.cache.store import RequestCache

cache_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="The request cache shared by all teachers: statistics and misses."
)
out = Console()
err = Console(stderr=True)

CacheOption = Annotated[
    Path | None,
    typer.Option(
        "--cache", help="Cache file (default: $DISTILL_CACHE_DIR/requests.sqlite or ~/.cache/distill/requests.sqlite)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _open(cache: Path | None) -> RequestCache:
    path = cache if cache is not None else default_cache_path()
    if not path.expanduser().is_file():
        _fail(
            f"no request cache at {path} (it is created by the first run that calls a teacher; "
            f"--cache points at another file)"
        )
    try:
        return RequestCache(path, create=False)
    except DistillError as exc:
        _fail(str(exc), exc.exit_code)
        raise  # pragma: no cover - _fail exits


def _size(n: int) -> str:
    size, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


def _show(value: object) -> Text:
    """Text, not markup: prompts may hold square brackets that rich would swallow."""
    return Text(value if isinstance(value, str) else json.dumps(value))


@cache_app.command()
def stats(cache: CacheOption = None, as_json: JsonOption = False) -> None:
    """Entries, size, lifetime hits, recorded misses and entries per model."""
    with _open(cache) as c:
        try:
            s = c.stats()
        except DistillError as exc:
            _fail(str(exc), exc.exit_code)
            return
    if as_json:
        typer.echo(s.model_dump_json(indent=2))
        return
    table = Table(title=Text(f"request cache {s.path}"))
    table.add_column("")
    table.add_column("", justify="right")
    for name, value in (
        ("entries", str(s.entries)),
        ("size", _size(s.size_bytes)),
        ("lifetime hits", str(s.hits)),
        ("recorded misses", str(s.misses)),
    ):
        table.add_row(name, value)
    out.print(table)
    if s.models:
        models = Table(title="entries per model")
        models.add_column("model")
        models.add_column("entries", justify="right")
        for model, n in s.models.items():
            models.add_row(Text(model), str(n))
        out.print(models)


@cache_app.command()
def explain(
    cache: CacheOption = None,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(min=1, help="How many recent misses to explain.")] = 20,
) -> None:
    """Recent misses, each with the fields that differ from the nearest cached entry."""
    with _open(cache) as c:
        try:
            explanations = c.explain(limit=limit)
        except DistillError as exc:
            _fail(str(exc), exc.exit_code)
            return
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in explanations], indent=2))
        return
    if not explanations:
        out.print("no misses recorded")
        return
    table = Table(title=f"{len(explanations)} most recent misses, against the nearest cached entry")
    for col in ("miss", "model", "field", "cached", "new"):
        table.add_column(col, overflow="fold")
    for e in explanations:
        when = _dt.datetime.fromtimestamp(e.time).strftime("%Y-%m-%d %H:%M:%S") if e.time else ""
        label, model = Text(f"{e.key[:12]}\n{when}"), Text(e.model or "")
        if e.note:
            table.add_row(label, model, Text(e.note, style="italic"), "", "")
            label = model = Text("")
        for d in e.differences:
            cached = Text("(absent)", style="dim") if d.change == "added" else _show(d.cached)
            new = Text("(absent)", style="dim") if d.change == "removed" else _show(d.new)
            table.add_row(label, model, Text(d.path), cached, new)
            label = model = Text("")
        table.add_section()
    out.print(table)
