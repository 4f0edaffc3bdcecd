"""The license audit: may this dataset or model be released, for this use?

`distill.audit` is also the public path of `AuditRule`, the base class of audit-rule plugins,
and of the audit's entry points (`audit`, `AuditReport`)."""

from distill.audit.base import (
    DISCLAIMER,
    EXAMPLES,
    SEVERITIES,
    AckRecord,
    AuditInput,
    AuditReport,
    AuditRule,
    Contributor,
    Finding,
    LicenseUse,
    Severity,
    Verdict,
    audit,
    base_model_license,
    check_ack_rules,
    collect,
)

__all__ = [
    "Severity",
    "SEVERITIES",
    "Verdict",
    "EXAMPLES",
    "DISCLAIMER",
    "Contributor",
    "LicenseUse",
    "Finding",
    "AckRecord",
    "AuditReport",
    "AuditInput",
    "AuditRule",
    "base_model_license",
    "collect",
    "audit",
    "check_ack_rules",
]
