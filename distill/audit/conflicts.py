"""The audit rule for a declaration that the model's own metadata contradicts.

A user's `license:` wins over what a model says about itself, because the user may know
better (a separate agreement, a mislabelled card). But the difference is exactly the kind of
question only a person can answer, so it is a finding that needs a recorded acknowledgement.
"""

from __future__ import annotations

from distill.audit.base import EXAMPLES, AuditInput, AuditRule, Finding


class TermsConflict(AuditRule):
    name = "terms-conflict"
    description = "A model's declared terms agree with what the model says about itself."

    def check(self, audit: AuditInput) -> list[Finding]:
        return [
            Finding(
                rule=self.name,
                severity="acknowledge",
                license=declared,
                message=(
                    f"{model} was declared {declared}, but the model itself says {says}: "
                    "which terms really apply? distill cannot decide that"
                ),
                fix="correct the teacher's `license:` (or `models:` entry), or acknowledge with the reason",
                records=len(ids),
                examples=ids[:EXAMPLES],
            )
            for (model, declared, says), ids in audit.conflicts.items()
        ]
