"""`distill review OUT [--stage S]`: a page in the browser over a stage's records, for people."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from distill.cli.output import print_error
from distill.errors import DistillError
from distill.review.decisions import DecisionLog, agreement, decisions_path
from distill.review.server import ReviewServer
from distill.review.view import default_stage, stage_manifest

out = Console()


def review_command(
    output: Annotated[Path, typer.Argument(help="A run's output folder.")],
    stage: Annotated[str | None, typer.Option(help="The stage to review (default: the last rank stage).")] = None,
    reviewer: Annotated[str | None, typer.Option(help="Who is reviewing (default: your user name).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 8765,
    token: Annotated[
        bool | None,
        typer.Option("--token/--no-token", help="Ask for a printed token (default: only off loopback)."),
    ] = None,
    show_agreement: Annotated[
        bool, typer.Option("--agreement", help="Print how often the reviewers agreed, as JSON, and exit.")
    ] = False,
) -> None:
    """Rank, choose, accept, reject, edit and flag a stage's records in the browser.

    Every decision is saved at once (OUT/review/STAGE/decisions.jsonl); a `review` stage in the
    config turns them into records for the stages after it (see docs/review.md)."""
    try:
        name = stage or default_stage(output)
        stage_manifest(output, name)  # names the stages there are when this one is not
        if show_agreement:
            log = DecisionLog(decisions_path(output, name))
            print(json.dumps(agreement(log.by_record()), indent=1))
            return
        server = ReviewServer(output, name, reviewer=reviewer or _user(), host=host, port=port, require_token=token)
    except DistillError as exc:
        print_error(exc)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:
        out.print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", markup=False)
        raise typer.Exit(1) from None
    total = len(server.records.records)
    out.print(f"reviewing stage {name!r} of {output}: {total} records, as {server.reviewer}", markup=False)
    out.print(f"decisions are saved to {server.log.path}", markup=False)
    out.print(f"open {server.url}", markup=False, soft_wrap=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        out.print("stopped; every confirmed decision is saved", markup=False)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"
