"""Audit rules for terms that disagree with another statement about the same model.

A user's `license:` wins over what a model says about itself, because the user may know
better (a separate agreement, a mislabelled card); and terms recorded in a run stay what they
were when it ran. But a disagreement is exactly the kind of question only a person can
answer, so each is a finding that needs a recorded acknowledgement.
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


class RegistryChanged(AuditRule):
    name = "registry-changed"
    description = "Terms a registry rule gave in the run are what the registry in effect still gives."

    def check(self, audit: AuditInput) -> list[Finding]:
        out = []
        reg = audit.registry
        for (model, recorded, how), ids in audit.by_rule.items():
            match = reg.match_model([model], "local")
            if match.rule is None and match.family is None:
                continue  # no opinion now (an API model, a name no pattern covers)
            if match.rule is not None and set(reg.keys(match.rule.license)) <= set(reg.keys(recorded)):
                continue  # the same terms, or the run recorded more
            if match.rule is not None:
                now = f"{match.rule.license} ({match.where})"
            else:
                fam = match.family
                assert fam is not None
                now = f"unknown, probably a {fam.family} model ({', '.join(fam.candidates)})"
            origin = how or "recorded before distill said how terms were found"
            out.append(
                Finding(
                    rule=self.name,
                    severity="acknowledge",
                    license=recorded,
                    message=(
                        f"{model}'s terms were recorded as {recorded} ({origin}); registry version "
                        f"{reg.version} says {now}"
                    ),
                    fix="declare the model's terms (the teacher's `license:` or a `models:` entry) and run "
                    "the stage again (answers come from the request cache), or acknowledge",
                    records=len(ids),
                    examples=ids[:EXAMPLES],
                )
            )
        return out
