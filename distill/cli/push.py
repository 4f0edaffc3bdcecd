"""`distill push ARTEFACT --repo ORG/NAME`: publish an export or a student, only when its audit
clears. Exit 0 uploaded (or a dry run), 1 not cleared (nothing uploaded), 2 error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape as _e

from distill.audit.release import audit_target
from distill.audit.report import VERDICT_TEXT
from distill.audit.target import load_target, run_exports, run_students
from distill.cli.audit import print_report, record_audit
from distill.cli.output import print_error
from distill.config.loader import load_config
from distill.config.release import parse_ack
from distill.errors import ConfigError, DistillError
from distill.layout import RUN_FILE
from distill.publish.hub import check_repo_id, hub_token, release_files, upload
from distill.registry import make_registry

out = Console()
err = Console(stderr=True)


def push_command(
    artefact: Annotated[Path, typer.Argument(help="An export folder (OUT/export/NAME) or a trained student's folder.")],
    repo: Annotated[str, typer.Option(help="The Hub repository: ORG/NAME (created if missing).")],
    use: Annotated[str | None, typer.Option(help="Intended use: commercial or research.")] = None,
    name: Annotated[str | None, typer.Option(help="Release name (default: the config's, else the stage's).")] = None,
    ack: Annotated[
        list[str] | None,
        typer.Option("--ack", help="Acknowledge a finding: RULE[:LICENSE]=REASON (repeatable; recorded in the cards)."),
    ] = None,
    private: Annotated[bool, typer.Option(help="Create the repository private.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to commit to (default: main).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Audit and list the files; upload nothing.")] = False,
    config: Annotated[
        Path | None, typer.Option(help="Read licenses/models/release from this config instead of the run's own.")
    ] = None,
) -> None:
    """Upload a cleared export or student to the Hugging Face Hub (HF_TOKEN, HF_ENDPOINT from the
    environment). Its audit runs first, for this release; anything but `cleared` uploads nothing."""
    try:
        repo = check_repo_id(repo)
        if (artefact / RUN_FILE).is_file():
            choices = [f"{artefact}/export/{n}" for n in run_exports(artefact)] + [
                str(s) for s in run_students(artefact)
            ]
            raise ConfigError(
                f"{artefact} is a whole run: push one artefact at a time ({', '.join(choices) or 'it has none yet'})"
            )
        target = load_target(artefact, None, load_config(config).raw if config is not None else None)
        given = {"use": use, "name": name, "what": "data" if target.kind == "dataset" else "model"}
        label = f"export/{target.stage}" if target.kind == "dataset" else target.root.name
        report = audit_target(
            target,
            {k: v for k, v in given.items() if v is not None},
            [parse_ack(a) for a in ack or []],
            make_registry(),
            where=label,
        )
    except DistillError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    print_report(report)
    files = release_files(target)
    kind = "dataset" if target.kind == "dataset" else "model"
    cleared = report.verdict == "cleared"
    if dry_run:
        would = "would upload" if cleared else "would upload, once cleared,"
        out.print(_e(f"dry run: {would} {len(files)} files to the {kind} repository {repo}:"), highlight=False)
        for f in files:
            out.print(_e(f"  {f}"), highlight=False)
    if not cleared:
        err.print(
            _e(f"nothing uploaded to {repo}: {VERDICT_TEXT[report.verdict]}"),
            style="bold red",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if dry_run:
        return
    try:
        hub_token()
        record_audit(report, target)  # the uploaded cards show this audit and its acknowledgements
        done = upload(target, report, repo, private, revision)
    except DistillError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    out.print(_e(f"uploaded {len(done.files)} files to the {kind} repository {repo}: {done.url}"), highlight=False)
    if done.deleted:
        out.print(_e(f"removed {len(done.deleted)} files an earlier push left there: {', '.join(done.deleted)}"))
