"""An audit report as JSON, Markdown and a terminal table: the same facts in each.

The Markdown form is also the audit section of the dataset and model cards, so a card shows
exactly what `distill audit` said, acknowledgements and their reasons included.
"""

from __future__ import annotations

import html
import json
from typing import Any

from distill.audit.base import AuditReport, Finding

VERDICT_TEXT = {
    "cleared": "cleared: nothing blocks and every finding that needs an acknowledgement has one",
    "needs-acknowledgement": "not cleared: findings need an explicit acknowledgement (--ack RULE[:LICENSE]=REASON)",
    "blocked": "blocked: the licenses do not allow this release as it stands",
}


def explain(report: AuditReport) -> str:
    """The verdict in one sentence, naming what decided it."""

    def names(fs: list[Finding]) -> str:
        return "; ".join(f"{f.rule}" + (f" ({f.license}, {f.records} records)" if f.license else "") for f in fs)

    blocking = [f for f in report.findings if f.severity == "blocking"]
    pending = [f for f in report.findings if f.severity == "acknowledge" and f.acknowledged is None]
    acked = [f for f in report.findings if f.severity == "acknowledge" and f.acknowledged is not None]
    info = sum(f.severity == "info" for f in report.findings)
    if blocking:
        text = f"blocked by {len(blocking)} finding(s): {names(blocking)}"
        if pending:
            text += f"; {len(pending)} more need acknowledgement"
        return text + "."
    if pending:
        return (
            f"{len(pending)} finding(s) need an explicit acknowledgement (--ack RULE[:LICENSE]=REASON, or "
            f"release.acknowledge in the config): {names(pending)}."
        )
    text = (
        f"every one of the {len(report.licenses)} license(s) allows this {report.release.use} release and "
        "nothing blocks it"
    )
    if acked:
        text += f"; {len(acked)} finding(s) acknowledged with a recorded reason"
    if info:
        text += f"; {info} informational finding(s) list obligations (notices, policies) that NOTICE carries"
    return text + "."


def to_json(report: AuditReport) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def summary(report: AuditReport) -> str:
    r = report.release
    what = "a model trained on this data" if r.what == "model" and report.kind == "dataset" else r.what
    name = f" as {r.name!r}" if r.name else ""
    return f"{r.use} release of {what}{name}"


def plain_text(text: Any) -> str:
    """Text for Markdown outside tables: escaped, so a name is never taken as HTML."""
    return html.escape(str(text), quote=False)


def table_cell(text: Any) -> str:
    """Text for a Markdown table cell: Markdown is rendered as HTML (on the Hub, on GitHub), so
    names and reasons from configs and records are escaped, never taken as markup."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _status(f: Finding) -> str:
    if f.severity == "acknowledge":
        return f"acknowledged: {f.acknowledged.reason}" if f.acknowledged else "NEEDS ACKNOWLEDGEMENT"
    return "BLOCKING" if f.severity == "blocking" else "info"


def to_markdown(report: AuditReport, level: int = 1) -> str:
    """The report as Markdown; `level` is the heading level of its title (cards nest it)."""
    h = "#" * level
    counts = report.counts()
    lines = [
        f"{h} License audit: {plain_text(summary(report))}",
        "",
        f"**Verdict: {report.verdict}** ({VERDICT_TEXT[report.verdict]}); exit code {report.exit_code}.",
        "",
        f"Why: {plain_text(explain(report))}",
        "",
        f"> {report.disclaimer}",
        "",
        f"- audited: {report.kind} `{report.target}`"
        + (f", stage `{report.stage}`" if report.stage else "")
        + f", {report.records} records",
        f"- effective license: `{report.license.expression}` (use: {report.license.use})",
        f"- findings: {counts['blocking']} blocking, {counts['acknowledge']} needing acknowledgement, "
        f"{counts['info']} informational",
        f"- license registry version {report.registry_version}",
    ]
    if report.base_model_license:
        lines.append(f"- base model: {plain_text(report.release.base_model or '-')} (`{report.base_model_license}`)")
    lines += ["", f"{h}# Findings", ""]
    if report.findings:
        lines += [
            "| severity | rule | license | records | examples | finding | status |",
            "|---|---|---|---:|---|---|---|",
        ]
        for f in report.findings:
            message = f.message + (f" Fix: {f.fix}." if f.fix else "")
            lines.append(
                f"| {f.severity} | {f.rule} | {table_cell(f.license or '-')} | {f.records} | "
                f"{table_cell(', '.join(f.examples) or '-')} | {table_cell(message)} | {table_cell(_status(f))} |"
            )
    else:
        lines.append("No findings.")
    lines += ["", f"{h}# Licenses", "", "| license | name | use | records | from |", "|---|---|---|---:|---|"]
    for u in report.licenses:
        who = "; ".join(c.describe() for c in u.contributors)
        lines.append(
            f"| {table_cell(u.license)} | {table_cell(u.name or '-')} | {u.use} | {u.records} | {table_cell(who)} |"
        )
    lines += ["", f"{h}# Acknowledgements", ""]
    if report.acknowledgements:
        lines += ["| rule | license | reason | by | given in | findings |", "|---|---|---|---|---|---:|"]
        for a in report.acknowledgements:
            lines.append(
                f"| {a.rule} | {table_cell(a.license or 'any')} | {table_cell(a.reason)} | {table_cell(a.by or '-')} | "
                f"{a.source} | {a.matched} |"
            )
    else:
        lines.append("None given.")
    if report.warnings:
        lines += ["", f"{h}# Warnings", ""] + [f"- {plain_text(w)}" for w in report.warnings]
    return "\n".join(lines) + "\n"
