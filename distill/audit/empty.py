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
        # A student's influences (a distillation teacher) are records of the audit, not data.
        data = audit.records if audit.data_records is None else audit.data_records
        if data:
            return []
        if audit.release.what == "model":
            what = "the student was trained on no records"
            fix = "train it on an export that has records"
        else:
            what = "the export has no records"
            fix = "see why the stages before it kept nothing (`distill inspect OUT`), fix them and run again"
        return [
            Finding(rule=self.name, severity="blocking", license=None, message=f"nothing to release: {what}", fix=fix)
        ]
