"""`distill audit PATH`: may this be released, for this use? Exit 0 yes, 1 not yet, 2 error.

The flags override the `release:` section of the run's config; acknowledgements from both
are recorded in the report, which is saved beside what was audited (with `--write`, the
default) together with refreshed cards, so the cards always show the latest audit.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape as _e
from rich.table import Table

from distill.audit.base import audit
from distill.audit.report import VERDICT_TEXT, explain, summary, to_json, to_markdown
from distill.audit.rules import make_rules
from distill.audit.target import load_target
from distill.cards.dataset import write_dataset_cards
from distill.config.errors import format_validation_error
from distill.config.loader import load_config
from distill.config.release import ReleaseSettings, parse_ack
from distill.errors import ConfigError, DistillError
from distill.io.store import atomic_write
from distill.layout import AUDIT_JSON, AUDIT_MD, MODEL_MARKER
from distill.licenses import active
from distill.registry import make_registry
from distill.stages.train import record_student_audit

if TYPE_CHECKING:
    from distill.audit.base import AuditReport
    from distill.audit.target import Target

out = Console()
err = Console(stderr=True)
_STYLE = {"blocking": "bold red", "acknowledge": "yellow", "info": "dim"}
_VERDICT_STYLE = {"cleared": "bold green", "needs-acknowledgement": "bold yellow", "blocked": "bold red"}


def audit_command(
    path: Annotated[
        Path, typer.Argument(help="A run's output folder, one of its export folders, or a trained student's folder.")
    ],
    use: Annotated[str | None, typer.Option(help="Intended use: commercial or research.")] = None,
    release: Annotated[
        str | None, typer.Option("--release", help="What is released: data, or a model trained on it.")
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
    stage: Annotated[str | None, typer.Option(help="Stage to audit (default: the last export).")] = None,
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
    """Check a dataset or a student against its licenses for a release; exit 0 only when cleared.

    Not legal advice: findings that need acknowledgement are questions for you and your counsel.
    """
    fmt = "json" if as_json else fmt
    try:
        if fmt not in ("table", "json", "markdown"):
            raise ConfigError(f"--format {fmt!r}: expected table, json or markdown")
        report, target = _run(
            path, use, release, name, base_model, base_model_license, monthly_users, ack or [], stage, config
        )
        if write:
            _record(report, target)
        if output is not None:
            _save(report, output)
    except DistillError as exc:
        err.print(f"[bold red]error:[/] {_e(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None

    if fmt == "json":
        sys.stdout.write(to_json(report))
    elif fmt == "markdown":
        sys.stdout.write(to_markdown(report))
    else:
        _print(report)
    raise typer.Exit(report.exit_code)


def _run(
    path, use, release, name, base_model, base_model_license, monthly_users, acks, stage, config
) -> tuple[AuditReport, Target]:
    from pydantic import ValidationError

    raw = load_config(config).raw if config is not None else None
    target = load_target(path, stage, raw)
    settings = target.settings
    with active(settings.registry):
        given = {
            "use": use,
            "what": release,
            "name": name,
            "base_model": base_model,
            "base_model_license": base_model_license,
            "monthly_users": monthly_users,
        }
        given = {k: v for k, v in given.items() if v is not None}
        if target.kind == "student" and given.get("what", "model") != "model":
            raise ConfigError(f"{path} is a trained student: only --release model applies")
        merged = {**settings.release.model_dump(exclude_unset=True), **given}
        if target.kind == "student":
            merged.update(
                {
                    k: v
                    for k, v in settings.release.model_dump().items()
                    if k in ("what", "name", "base_model", "base_model_license") and k not in given
                }
            )
        try:
            settings_release = ReleaseSettings.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(
                "invalid release settings: "
                + format_validation_error(exc, ReleaseSettings, prefix="release", header=False)
            ) from None
        if settings_release.name is None and settings_release.what == "data" and target.stage:
            settings_release = settings_release.model_copy(update={"name": target.stage})
        cli_acks = [parse_ack(a) for a in acks]
        plugins = make_registry()
        for f in plugins.failures:
            err.print(f"[yellow]warning:[/] plugin {_e(repr(f.plugin))} was skipped: {_e(f.error)}", highlight=False)
        rules = make_rules(plugins, settings_release.rules)
        report = audit(
            target.records,
            settings_release,
            settings.registry,
            rules,
            target=str(path),
            kind=target.kind,
            stage=target.stage,
            models=settings.models,
            cli_acks=cli_acks,
            warnings=target.warnings,
        )
    return report, target


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "release"


def _record(report: AuditReport, target: Target) -> None:
    """Save the report, and refresh the cards so they show it (acknowledgements included)."""

    r = report.release
    if target.kind == "student":
        if (target.root / MODEL_MARKER).is_file():  # trained by distill: its card shows the audit
            record_student_audit(target.root, report, target.settings.registry)
            return
        # A student trained elsewhere: its README.md is not ours, so the audit goes beside it.
        carded = report.model_copy(update={"target": "."})
        atomic_write(target.root / AUDIT_JSON, to_json(carded).encode())
        atomic_write(target.root / AUDIT_MD, to_markdown(carded).encode())
        return
    folder = target.root / "audits"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / f"{_slug(f'{r.what}-{r.use}-{r.name or target.stage}')}.json", to_json(report).encode())
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


def _save(report: AuditReport, output: Path) -> None:
    text = to_json(report) if output.suffix.lower() == ".json" else to_markdown(report)
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from None


def _print(report: AuditReport) -> None:
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
