"""`distill audit PATH`: may this be released, for this use? Exit 0 yes, 1 not yet, 2 error.

For a run's output folder, "this" is everything the run would release (every export, every
student): one verdict each, and the exit code of the worst.

The flags override the `release:` section of the run's config; acknowledgements from both
are recorded in the report, which is saved beside what was audited (with `--write`, the
default) together with refreshed cards, so the cards always show the latest audit.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape as _e
from rich.table import Table

from distill.audit.release import Audited, audit_target, release_targets, worst
from distill.audit.report import VERDICT_TEXT, explain, summary, to_json, to_markdown
from distill.cards.dataset import write_dataset_cards
from distill.cli.output import print_error
from distill.config.loader import load_config
from distill.config.release import parse_ack
from distill.errors import ConfigError, DistillError
from distill.io.store import atomic_write
from distill.layout import AUDIT_JSON, AUDIT_MD, MODEL_MARKER
from distill.registry import make_registry
from distill.stages.train import record_student_audit

if TYPE_CHECKING:
    from distill.audit.base import AuditReport
    from distill.audit.target import Target

out = Console()
err = Console(stderr=True)
_STYLE = {"blocking": "bold red", "acknowledge": "yellow", "info": "dim"}
_VERDICT_STYLE = {"cleared": "bold green", "needs-acknowledgement": "bold yellow", "blocked": "bold red"}
#: What each kind of artefact is released as, in the summary of a run's release.
_KIND = {"dataset": "data", "student": "model"}


def audit_command(
    path: Annotated[
        Path,
        typer.Argument(
            help="A run's output folder (all its exports and students), one export folder, or a trained student's folder."
        ),
    ],
    use: Annotated[str | None, typer.Option(help="Intended use: commercial or research.")] = None,
    release: Annotated[
        str | None,
        typer.Option(
            "--release", help="What is released: data, or a model trained on it (for a run folder: which artefacts)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Release name (some licenses require a model name prefix).")] = None,
    base_model: Annotated[str | None, typer.Option(help="Model release: the student's base model id.")] = None,
    base_model_license: Annotated[
        str | None, typer.Option(help="SPDX expression of the base model's terms (default: from the model rules).")
    ] = None,
    monthly_users: Annotated[int | None, typer.Option(help="Expected monthly active users.")] = None,
    ack: Annotated[
        list[str] | None,
        typer.Option("--ack", help="Acknowledge a finding: RULE[:LICENSE]=REASON (repeatable; recorded)."),
    ] = None,
    stage: Annotated[
        str | None, typer.Option(help="Audit only this stage (default: every export and every student).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Read licenses/models/release from this config instead of the run's own.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or markdown.")] = "table",
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Also write the report (JSON or Markdown by its suffix) to this file."),
    ] = None,
    write: Annotated[bool, typer.Option(help="Save the report beside what was audited and refresh its cards.")] = True,
) -> None:
    """Check a run's exports and students, or one of them, against their licenses for a release;
    exit 0 only when every one is cleared.

    Not legal advice: findings that need acknowledgement are questions for you and your counsel.
    """
    fmt = "json" if as_json else fmt
    try:
        if fmt not in ("table", "json", "markdown"):
            raise ConfigError(f"--format {fmt!r}: expected table, json or markdown")
        given = {
            "use": use,
            "what": release,
            "name": name,
            "base_model": base_model,
            "base_model_license": base_model_license,
            "monthly_users": monthly_users,
        }
        audited = _run(path, {k: v for k, v in given.items() if v is not None}, ack or [], stage, config)
        if write:
            _record_all(audited)
        if output is not None:
            _save(audited, output)
    except DistillError as exc:
        print_error(exc)
        raise typer.Exit(2) from None

    overall = worst([a.report.verdict for a in audited])
    if fmt == "json":
        sys.stdout.write(_json(audited))
    elif fmt == "markdown":
        sys.stdout.write(_markdown(audited))
    else:
        for a in audited:
            if len(audited) > 1:
                out.rule(_e(a.label))
            print_report(a.report)
        if len(audited) > 1:
            _print_overall(audited, overall)
    raise typer.Exit(0 if overall == "cleared" else 1)


def _run(path: Path, given: dict[str, Any], acks: list[str], stage: str | None, config: Path | None) -> list[Audited]:
    raw = load_config(config).raw if config is not None else None
    targets = release_targets(path, stage, raw, given.get("what"))
    cli_acks = [parse_ack(a) for a in acks]
    plugins = make_registry()
    for f in plugins.failures:
        err.print(f"[yellow]warning:[/] plugin {_e(repr(f.plugin))} was skipped: {_e(f.error)}", highlight=False)
    several = len(targets) > 1
    audited = []
    for t in targets:
        where = str(path) if not several else str(t.root if t.kind == "student" else t.export_path or t.root)
        audited.append(Audited(t, audit_target(t, given, cli_acks, plugins, where, several)))
    return audited


def _json(audited: list[Audited]) -> str:
    """One artefact: its report, as before. Several: the overall verdict and each report."""
    if len(audited) == 1:
        return to_json(audited[0].report)
    overall = worst([a.report.verdict for a in audited])
    data = {
        "verdict": overall,
        "exit_code": 0 if overall == "cleared" else 1,
        "artefacts": [{"artefact": a.label, "kind": a.target.kind, **json.loads(to_json(a.report))} for a in audited],
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _markdown(audited: list[Audited]) -> str:
    if len(audited) == 1:
        return to_markdown(audited[0].report)
    overall = worst([a.report.verdict for a in audited])
    lines = [
        f"# License audit of a release: {overall}",
        "",
        "| artefact | kind | records | effective license | verdict |",
        "|---|---|---:|---|---|",
    ]
    lines += [
        f"| {a.label} | {_KIND[a.target.kind]} | {a.report.records} | {a.report.license.expression} | {a.report.verdict} |"
        for a in audited
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(to_markdown(a.report) for a in audited)


def _print_overall(audited: list[Audited], overall: str) -> None:
    t = Table(title="the release")
    for col in ("artefact", "kind", "records", "effective license", "verdict"):
        t.add_column(col, justify="right" if col == "records" else "left", overflow="fold")
    for a in audited:
        v = a.report.verdict
        t.add_row(
            _e(a.label),
            _KIND[a.target.kind],
            str(a.report.records),
            _e(a.report.license.expression),
            f"[{_VERDICT_STYLE[v]}]{v}[/]",
        )
    out.print(t)
    worst_of = ", ".join(a.label for a in audited if a.report.verdict == overall)
    out.print(
        f"[{_VERDICT_STYLE[overall]}]overall verdict: {overall}[/]"
        + ("" if overall == "cleared" else _e(f" — because of {worst_of}")),
        highlight=False,
    )


def _record_all(audited: list[Audited]) -> None:
    names = [_audit_file(a) for a in audited]
    for a, file_name in zip(audited, names):
        unique = names.count(file_name) == 1
        record_audit(a.report, a.target, file_name if unique else _slug(f"{file_name}-{a.target.stage}"))


def _audit_file(a: Audited) -> str:
    r = a.report.release
    return _slug(f"{r.what}-{r.use}-{r.name or a.target.stage}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "release"


def record_audit(report: AuditReport, target: Target, file_name: str | None = None) -> None:
    """Save the report, and refresh the cards so they show it (acknowledgements included)."""

    r = report.release
    if target.kind == "student":
        if (target.root / MODEL_MARKER).is_file():  # trained by distill: its card shows the audit
            # A step's adapter and its merged weights are one student: both cards show the verdict.
            root = target.root
            for folder in sorted({root, root.parent if root.name == "merged" else root / "merged"}):
                if (folder / MODEL_MARKER).is_file():
                    record_student_audit(folder, report, target.settings.registry)
            return
        # A student trained elsewhere: its README.md is not ours, so the audit goes beside it.
        carded = report.model_copy(update={"target": "."})
        atomic_write(target.root / AUDIT_JSON, to_json(carded).encode())
        atomic_write(target.root / AUDIT_MD, to_markdown(carded).encode())
        return
    folder = target.root / "audits"
    folder.mkdir(parents=True, exist_ok=True)
    file_name = file_name or _slug(f"{r.what}-{r.use}-{r.name or target.stage}")
    atomic_write(folder / f"{file_name}.json", to_json(report).encode())
    if target.export_path is not None and target.export_path.is_dir() and r.what == "data":
        carded = report.model_copy(update={"target": f"export/{target.stage}"})  # no local paths in cards
        write_dataset_cards(
            target.export_path,
            r.name or target.stage or "dataset",
            target.records,
            carded,
            target.settings.registry,
            target.export_format or "sft",
        )


def _save(audited: list[Audited], output: Path) -> None:
    text = _json(audited) if output.suffix.lower() == ".json" else _markdown(audited)
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from None


def print_report(report: AuditReport) -> None:
    """The report as tables on the terminal; user text is printed as text, never as markup."""
    style = _VERDICT_STYLE[report.verdict]
    # Names, reasons and messages quote user input: printed as text, never as rich markup.
    out.print(
        _e(
            f"License audit: {summary(report)} — {report.records} records of {report.target}"
            + (f" (stage {report.stage})" if report.stage else "")
        ),
        highlight=False,
    )
    out.print(f"effective license: {report.license.expression} (use: {report.license.use})", highlight=False)
    if report.findings:
        t = Table(title="findings")
        for col in ("severity", "rule", "license", "records", "examples", "finding", "status"):
            t.add_column(col, justify="right" if col == "records" else "left", overflow="fold")
        for f in report.findings:
            status = (
                "acknowledged: " + f.acknowledged.reason
                if f.acknowledged
                else "NEEDS ACK"
                if f.severity == "acknowledge"
                else "BLOCKING"
                if f.severity == "blocking"
                else ""
            )
            msg = f.message + (f" Fix: {f.fix}." if f.fix else "")
            t.add_row(
                f"[{_STYLE[f.severity]}]{f.severity}[/]",
                _e(f.rule),
                _e(f.license or "-"),
                str(f.records),
                _e(", ".join(f.examples[:3]) or "-"),
                _e(msg),
                _e(status),
            )
        out.print(t)
    t = Table(title="licenses")
    for col in ("license", "use", "records", "from"):
        t.add_column(col, justify="right" if col == "records" else "left", overflow="fold")
    for u in report.licenses:
        t.add_row(_e(u.license), u.use, str(u.records), _e("; ".join(c.describe() for c in u.contributors)))
    out.print(t)
    if report.acknowledgements:
        t = Table(title="acknowledgements (recorded)")
        for col in ("rule", "license", "reason", "given in", "findings"):
            t.add_column(col, overflow="fold")
        for a in report.acknowledgements:
            t.add_row(_e(a.rule), _e(a.license or "any"), _e(a.reason), _e(a.source), str(a.matched))
        out.print(t)
    for w in report.warnings:
        err.print(f"[yellow]warning:[/] {_e(w)}", highlight=False, soft_wrap=True)
    out.print(f"[{style}]verdict: {report.verdict}[/] — {VERDICT_TEXT[report.verdict]}", highlight=False)
    out.print(_e(f"why: {explain(report)}"), highlight=False)
    out.print(f"[dim]{report.disclaimer}[/]", highlight=False)
