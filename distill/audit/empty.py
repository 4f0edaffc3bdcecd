"""The audit rule for a release with nothing in it.

An empty export has no records to carry terms, so every license rule finds nothing and the
verdict would read "cleared"; its tag is `LicenseRef-Unspecified`. Clearing nothing is a
claim about nothing: a filter that dropped everything, or a student trained on no data, is a
problem to fix before anything is published.
"""

from __future__ import annotations

from distill.audit.base import AuditInput, AuditRule, Finding


class EmptyRelease(AuditRule):
    name = "empty-release"
    description = "A release has records to release (an empty one is not cleared)."

    def check(self, audit: AuditInput) -> list[Finding]:
        if audit.records:
            return []
        what = "the student was trained on no records" if audit.release.what == "model" else "it has no records"
        return [
            Finding(
                rule=self.name,
                severity="blocking",
                license=None,
                message=f"nothing to release: {what}, so there is nothing the audit could clear",
                fix="check why the stages upstream kept nothing (`distill inspect OUT`), fix them and run again",
            )
        ]
