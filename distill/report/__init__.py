"""A run's report: one static HTML page that reads without a server."""

from distill.report.data import (
    SAMPLES,
    AuditEntry,
    ReportData,
    TrainingRun,
    gather,
)
from distill.report.html import render, write_report

__all__ = [
    "render",
    "write_report",
    "SAMPLES",
    "TrainingRun",
    "AuditEntry",
    "ReportData",
    "gather",
]
