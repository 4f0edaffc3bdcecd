"""The `distill` command. Plugins load only inside the commands that need them, so
`distill --help` stays fast and a broken plugin cannot break it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import nullcontext
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from distill import __version__
from distill.cli.audit import audit_command
from distill.cli.cache import cache_app
from distill.cli.licenses import licenses_app
from distill.cli.output import print_error
from distill.cli.push import push_command
from distill.cli.review import review_command
from distill.config.loader import load_config
from distill.config.schema import SCHEMAS, render
from distill.errors import DistillError, StoreError, scrub
from distill.io.inspect import inspect_output, to_json
from distill.io.runlog import DEFAULT_INTERVAL, INTERVAL_ENV, LinePrinter, library_bars_hidden
from distill.io.store import repair as repair_output
from distill.io.store import repair_hint, write_failure
from distill.layout import REPORT_FILE
from distill.pipeline import Pipeline
from distill.registry import make_registry
from distill.report.html import write_report

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Synthetic data and teacher-student distillation with per-record provenance.",
)
out = Console()
err = Console(stderr=True)


def _fail(exc: DistillError) -> None:
    print_error(exc)
    raise typer.Exit(exc.exit_code)


class LogFormat(StrEnum):
    text = "text"
    json = "json"


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    until: Annotated[str | None, typer.Option(help="Stop before this stage.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or progress lines.")] = False,
    strict_plugins: Annotated[bool, typer.Option(help="Fail if any installed plugin cannot load.")] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            help="How stderr reads when it is not a terminal: a line per stage start, end and progress "
            "(text), or the same events as JSON lines (json, also in a terminal)."
        ),
    ] = LogFormat.text,
    log_interval: Annotated[
        float,
        typer.Option(envvar=INTERVAL_ENV, min=0, help="Seconds between progress lines (0: none)."),
    ] = DEFAULT_INTERVAL,
) -> None:
    """Run (or resume) the pipeline a config describes."""

    lines = log_format is LogFormat.json or not sys.stderr.isatty()
    printer = LinePrinter(sys.stderr, log_format.value) if lines else None

    def say(message: str) -> None:
        if printer is not None:
            printer.message(message)
        else:
            err.print(scrub(message), markup=False, highlight=False)

    def fail(exc: DistillError) -> None:
        if printer is not None and printer.fmt == "json":
            printer.error(str(exc), exc.exit_code)
            raise typer.Exit(exc.exit_code)
        _fail(exc)

    try:
        with library_bars_hidden() if lines else nullcontext():
            loaded = load_config(config)
            registry = make_registry(strict=strict_plugins or loaded.config.plugins.strict or None)
            _report_failures(registry, say)
            result = Pipeline(
                loaded,
                registry,
                progress=not quiet and not lines,
                log=say,
                events=printer.event if printer is not None else None,
                log_interval=None if quiet or not log_interval else log_interval,
            ).run(until=until)
    except DistillError as exc:
        fail(exc)
        return
    except OSError as exc:  # the disk filled up, a folder became read-only: not a bug, say what and where
        where = Path(exc.filename) if getattr(exc, "filename", None) else config
        fail(StoreError(write_failure(where, exc)))
        return
    except KeyboardInterrupt:
        say("interrupted: committed shards are kept; run the same command again to resume")
        raise typer.Exit(130) from None
    _print_stages([(s.stage, s.kind, s.totals, "cached" if s.skipped else f"{s.seconds:.1f}s") for s in result.stages])
    if result.students:
        table = Table(title="students")
        for col in ("stage", "step", "trainer steps", "status", "model", "audit"):
            table.add_column(col)
        for st in result.students:
            for n, (step, r) in enumerate(st.steps):
                last = n == len(st.steps) - 1
                table.add_row(
                    escape(st.stage),
                    escape(step),
                    str(r.global_step),
                    "cached" if r.skipped else "trained",
                    escape(str(r.model_path)),
                    st.verdict if last else "",
                )
        out.print(table)
    out.print(f"output: {result.output}", markup=False, highlight=False)
    _write_report(result.output, say if printer is not None else None)


def _write_report(output: Path, say: Callable[[str], None] | None = None) -> None:
    """The run's HTML report; a failure here is a warning: the run itself succeeded."""
    try:
        path = write_report(output)
    except Exception as exc:
        if say is not None:
            say(
                f"warning: could not write the report: {type(exc).__name__}: {exc} "
                f"(retry with `distill report {output}`)"
            )
            return
        err.print(
            f"[yellow]warning:[/] could not write the report: {escape(scrub(f'{type(exc).__name__}: {exc}'))}"
            f" (retry with `distill report {escape(str(output))}`)",
            highlight=False,
            soft_wrap=True,
        )
        return
    out.print(f"report: {path}", markup=False, highlight=False, soft_wrap=True)


def _print_stages(rows: list[tuple[str, str, dict[str, int], str]]) -> None:
    table = Table(title="stages")
    for col in ("stage", "kind", "in", "generated", "kept", "rejected", "status"):
        table.add_column(col, justify="right" if col in ("in", "generated", "kept", "rejected") else "left")
    for stage, kind, t, status in rows:
        table.add_row(stage, kind, str(t["in"]), str(t["generated"]), str(t["kept"]), str(t["rejected"]), status)
    out.print(table)


@app.command()
def inspect(
    output: Annotated[Path, typer.Argument(help="A run's output folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per-stage counts and drop reasons of a run's output; exits 1 if records were lost or damaged."""

    try:
        reports = inspect_output(output)
    except DistillError as exc:
        _fail(exc)
        return
    if as_json:
        out.print_json(to_json(reports))
    else:
        _print_stages(
            [
                (
                    r.stage,
                    r.kind,
                    r.totals,
                    ("complete" if r.complete else f"partial ({r.shards} shards)")
                    + ("" if r.balanced else " LOST RECORDS")
                    + (" DAMAGED" if r.damaged else ""),
                )
                for r in reports
            ]
        )
        for r in reports:
            for title, counts in ((f"rejected in {r.stage}", r.reasons), (f"edited in {r.stage}", r.edits)):
                if counts:
                    t = Table(title=title)
                    t.add_column("plugin: reason")
                    t.add_column("records", justify="right")
                    for reason, n in counts.items():
                        t.add_row(escape(reason), str(n))
                    out.print(t)
    damaged = [r for r in reports if r.damaged]
    for r in damaged:
        err.print(f"[bold red]error:[/] stage {escape(repr(r.stage))}: {escape(r.damaged or '')}", highlight=False)
    if damaged:
        err.print(repair_hint(output), markup=False, highlight=False)
    if damaged or not all(r.balanced for r in reports):
        raise typer.Exit(1)


@app.command()
def report(output: Annotated[Path, typer.Argument(help="A run's output folder.")]) -> None:
    """Write OUT/report.html: data funnel, training curves, evaluations, audits and sample records
    of a run, in one self-contained HTML file; prints its path. Exits 2 if OUT is not a run's output."""

    try:
        path = write_report(output)
    except DistillError as exc:
        err.print(f"[bold red]error:[/] {escape(scrub(str(exc)))}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # a read-only or full disk: say where, never a traceback
        where = exc.filename or output / REPORT_FILE
        err.print(
            f"[bold red]error:[/] cannot write {escape(str(where))}: {escape(exc.strerror or str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    out.print(str(path), markup=False, highlight=False, soft_wrap=True)


@app.command()
def repair(output: Annotated[Path, typer.Argument(help="A run's output folder.")]) -> None:
    """Set damaged stage files aside (under OUT/damaged/) so the next run redoes only them."""

    try:
        done = repair_output(output)
    except DistillError as exc:
        _fail(exc)
        return
    except OSError as exc:
        _fail(StoreError(write_failure(Path(exc.filename or output), exc, "repair")))
        return
    for line in done:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    out.print(
        "nothing to repair: every committed shard matches its manifest"
        if not done
        else "run the pipeline again to redo what was set aside",
        highlight=False,
    )


@app.command()
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail if any installed plugin cannot load.")] = False,
) -> None:
    """List every plugin: kind, name, package and version, options."""

    try:
        reg = make_registry(strict=strict or None)
    except DistillError as exc:
        _fail(exc)
        return
    specs = reg.all()
    if as_json:
        data = {
            "plugins": [
                {
                    "kind": s.kind,
                    "name": s.name,
                    "entry_point": s.plugin,
                    "package": s.package,
                    "version": s.version,
                    "options": s.options_schema().get("properties", {}),
                }
                for s in specs
            ],
            "failed": [{"plugin": f.plugin, "package": f.package, "error": f.error} for f in reg.failures],
        }
        out.print_json(json.dumps(data, default=str))
        return
    table = Table(title="distill plugins")
    for col in ("kind", "name", "package", "version", "options"):
        table.add_column(col)
    for s in specs:
        props = s.options_schema().get("properties", {})
        opts = ", ".join(f"{k}={_short(v['default'])}" if "default" in v else k for k, v in props.items())
        table.add_row(*(escape(v) for v in (s.kind, s.name, s.package or "-", s.version or "-", opts)))
    out.print(table)
    _report_failures(reg)


def _short(value: object, width: int = 24) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _report_failures(reg, say: Callable[[str], None] | None = None) -> None:
    for f in reg.failures:
        if say is not None:
            say(f"warning: plugin {f.plugin!r} ({f.package or 'no package'}) was skipped: {f.error}")
            continue
        err.print(
            f"[yellow]warning:[/] plugin {escape(repr(f.plugin))} ({escape(f.package or 'no package')}) "
            f"was skipped: {escape(f.error)}",
            highlight=False,
        )


@app.command()
def schema(name: Annotated[str, typer.Argument(help="record, config or licenses")]) -> None:
    """Print the JSON Schema of records, of the config file or of the license registry."""

    if name not in SCHEMAS:
        err.print(f"[bold red]error:[/] unknown schema {escape(repr(name))}; known: {', '.join(SCHEMAS)}")
        raise typer.Exit(2)
    sys.stdout.write(render(name))


@app.command()
def version() -> None:
    """Print distill's version."""

    out.print(__version__)


def main() -> None:
    app()


def _mount() -> None:
    app.add_typer(cache_app, name="cache", help="What the request cache holds, and why lookups missed.")
    app.add_typer(licenses_app, name="licenses", help="Which terms a model gets and why; the license registry.")
    app.command(name="audit")(audit_command)
    app.command(name="push")(push_command)
    app.command(name="review")(review_command)


_mount()


if __name__ == "__main__":
    main()
