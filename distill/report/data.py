"""A run's report: one static HTML file (`OUT/report.html`) that reads without a server.

This module gathers what the output folder holds (stage manifests, students' training logs,
evaluation results, audits, the last export's records) into plain data; `distill.report.html`
renders it and `distill.report.plots` draws its plots. Every part is optional: a run without
training, evaluation or export gets a report that says so, and a part that cannot be read is
named in the report instead of failing it, because the report is written at the end of every
run and must never be the reason a finished run looks broken.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distill.audit.base import AuditReport, audit
from distill.audit.report import explain, summary
from distill.audit.rules import make_rules
from distill.audit.target import load_target
from distill.errors import StoreError
from distill.io.inspect import inspect_output
from distill.io.store import StageManifest, as_dict, read_shards
from distill.layout import AUDIT_JSON, DATASET_SIDECAR, MANIFEST, MODEL_MARKER, RUN_FILE
from distill.licenses import active
from distill.registry import make_registry
from distill.report.ablation import Ablation, load_ablation
from distill.report.eval import Evaluation, evaluations, is_number

#: Records shown in the samples section.
SAMPLES = 3


@dataclass
class TrainingRun:
    """One student step: its loss curve and final metrics."""

    stage: str
    step: str
    folder: str
    trainer: str | None = None
    model: str | None = None
    license: str | None = None
    global_step: int | None = None
    train: list[tuple[float, float]] = field(default_factory=list)
    evaluation: list[tuple[float, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    problem: str | None = None


@dataclass
class AuditEntry:
    """One audit verdict with its findings, as saved beside what was audited (or recomputed)."""

    kind: str
    target: str
    source: str
    verdict: str
    summary: str = ""
    explanation: str = ""
    license: str = ""
    use: str = ""
    records: int | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None


@dataclass
class ReportData:
    root: Path
    created: str
    run: dict[str, Any] = field(default_factory=dict)
    funnel: list[Any] = field(default_factory=list)  # distill.io.inspect.StageReport
    training: list[TrainingRun] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    ablation: Ablation | None = None
    audits: list[AuditEntry] = field(default_factory=list)
    samples: list[Any] = field(default_factory=list)  # distill.records.Record
    samples_from: str | None = None
    samples_format: str | None = None
    samples_license: str | None = None
    #: Parts of the output that could not be read, each named; shown at the top of the report.
    problems: list[str] = field(default_factory=list)


def gather(root: Path) -> ReportData:
    """Everything the report shows, read from the output folder."""
    root = Path(root)
    if not (root / "stages").is_dir():
        raise StoreError(f"{root} is not a distill output folder (no stages/ inside)")
    data = ReportData(root=root, created=datetime.now(UTC).isoformat(timespec="seconds"))
    run = _read_json(root / RUN_FILE, data.problems)
    data.run = run if isinstance(run, dict) else {}
    config = as_dict(data.run.get("config"))

    try:
        # Shard digests are not re-verified: `distill inspect` does that; the report must stay cheap.
        data.funnel = inspect_output(root, verify=False)
    except StoreError as exc:
        data.problems.append(f"stage manifests: {exc}")
    data.training = _training(root, config)
    data.evaluations = evaluations(root, {n: i for i, (n, _, _) in enumerate(_stage_names(config))}, data.problems)
    data.audits = _audits(root, data.funnel, data.problems)
    data.ablation = load_ablation(root, data.problems)
    _samples(root, data)
    return data


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name}: cannot be read ({exc})")
        return None


def _stage_names(config: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, kind, raw) per configured stage, named as the config names them."""
    stages = [s for s in config.get("stages", []) if isinstance(s, dict)]
    counts: dict[str, int] = {}
    for s in stages:
        counts[str(s.get("kind"))] = counts.get(str(s.get("kind")), 0) + 1
    return [
        (
            str(s.get("name") or (s.get("kind") if counts[str(s.get("kind"))] == 1 else f"{s.get('kind')}-{i}")),
            str(s.get("kind")),
            s,
        )
        for i, s in enumerate(stages)
    ]


def _step_order(config: dict[str, Any]) -> dict[tuple[str, str], int]:
    """Position of each train step in the config (default step names as the config gives them)."""
    order: dict[tuple[str, str], int] = {}
    for name, kind, raw in _stage_names(config):
        if kind != "train":
            continue
        steps = [s for s in raw.get("steps", []) if isinstance(s, dict)]
        counts: dict[str, int] = {}
        for s in steps:
            counts[str(s.get("trainer"))] = counts.get(str(s.get("trainer")), 0) + 1
        for j, s in enumerate(steps):
            t = str(s.get("trainer"))
            order[(name, str(s.get("name") or (t if counts[t] == 1 else f"{t}-{j}")))] = len(order)
    return order


def _training(root: Path, config: dict[str, Any]) -> list[TrainingRun]:
    order = _step_order(config)
    runs = []
    for log in (root / "models").glob("*/*/training_log.json"):
        folder = log.parent
        run = TrainingRun(stage=folder.parent.name, step=folder.name, folder=folder.relative_to(root).as_posix())
        problems: list[str] = []
        history = _read_json(log, problems)
        if not isinstance(history, list):
            run.problem = problems[0] if problems else "training_log.json is not a list of log entries"
            history = []
        for h in (h for h in history if isinstance(h, dict) and is_number(h.get("step"))):
            if is_number(h.get("loss")):
                run.train.append((float(h["step"]), float(h["loss"])))
            if is_number(h.get("eval_loss")):
                run.evaluation.append((float(h["step"]), float(h["eval_loss"])))
        marker = _read_json(folder / MODEL_MARKER, problems)
        if isinstance(marker, dict):
            trainer = marker.get("trainer")
            run.trainer = str(trainer.get("name")) if isinstance(trainer, dict) else None
            run.model, run.license = marker.get("model"), marker.get("license")
            run.global_step = marker.get("global_step") if is_number(marker.get("global_step")) else None
            metrics = as_dict(marker.get("metrics"))
        else:  # a step still training, or killed: its log's summary line, when it has one
            metrics = next((h for h in reversed(history) if isinstance(h, dict) and "train_runtime" in h), {})
        run.metrics = {k: float(v) for k, v in metrics.items() if is_number(v)}
        if run.train:
            run.metrics.setdefault("first_loss", run.train[0][1])
            run.metrics.setdefault("final_loss", run.train[-1][1])
        runs.append(run)
    runs.sort(key=lambda r: (order.get((r.stage, r.step), len(order)), r.stage, r.step))
    return runs


# ----------------------------------------------------------------------------- audits


def _audits(root: Path, funnel: list[Any], problems: list[str]) -> list[AuditEntry]:
    """Exports' audits (as the run's cards show them), saved `distill audit` reports, and students'."""
    entries = []
    for report in funnel:
        if report.kind == "export" and (root / "export" / report.stage).is_dir():
            entries.append(_export_audit(root, report.stage, problems))
    for path in sorted((root / "audits").glob("*.json")):
        entries.append(_saved_audit(path, root, "dataset", "saved by `distill audit`", problems))
    for path in sorted((root / "models").glob("*/*/audit.json")):
        entries.append(_saved_audit(path, root, "student", "audited by the train stage", problems))
    return entries


def _saved_audit(path: Path, root: Path, kind: str, how: str, problems: list[str]) -> AuditEntry:
    rel = path.relative_to(root).as_posix()
    where = rel.rsplit("/", 1)[0] if kind in ("student", "dataset") else None
    try:
        report = AuditReport.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        problems.append(f"{rel}: not an audit report ({exc.__class__.__name__})")
        return AuditEntry(
            kind=kind,
            target=where or rel,
            source=rel,
            verdict="unreadable",
            note=f"{rel} could not be read as an audit report",
        )
    return _entry(report, kind, where or report.target, f"{rel} ({how})")


def _export_audit(root: Path, stage: str, problems: list[str]) -> AuditEntry:
    """An export's audit against the run's `release:` policy, as the pipeline computes it for the
    cards (it keeps no audit file of its own); the verdict the cards recorded is checked against it."""
    folder = root / "export" / stage
    sidecar = _read_json(folder / DATASET_SIDECAR, []) or {}
    recorded = sidecar.get("audit", {}).get("verdict") if isinstance(sidecar.get("audit"), dict) else None
    saved = folder / AUDIT_JSON
    if saved.is_file():
        return _saved_audit(saved, root, "dataset", "saved with the export", problems)
    try:
        report = _recompute(root, stage)
    except Exception as exc:
        problems.append(f"export {stage!r}: its audit could not be recomputed ({type(exc).__name__}: {exc})")
        return AuditEntry(
            kind="dataset",
            target=f"export/{stage}",
            source=f"export/{stage}/distill-dataset.json",
            verdict=recorded or "unknown",
            license=str(sidecar.get("license") or ""),
            note=f"findings: see export/{stage}/README.md",
        )
    entry = _entry(report, "dataset", f"export/{stage}", f"the run's release policy (as in export/{stage}/README.md)")
    if recorded and recorded != report.verdict:
        entry.note = (
            f"the export's cards recorded {recorded!r}: run `distill audit` or the pipeline again to refresh them"
        )
    return entry


def _recompute(root: Path, stage: str) -> Any:
    target = load_target(root, stage)
    release = target.settings.release
    if release.name is None:
        release = release.model_copy(update={"name": stage})
    with active(target.settings.registry):
        rules = make_rules(make_registry(), release.rules)
        return audit(
            target.records,
            release,
            target.settings.registry,
            rules,
            target=f"export/{stage}",
            stage=stage,
            models=target.settings.models,
            warnings=target.warnings,
        )


def _entry(report: Any, kind: str, target: str, source: str) -> AuditEntry:
    findings = []
    for f in report.findings:
        status = (
            ("acknowledged: " + f.acknowledged.reason if f.acknowledged else "needs acknowledgement")
            if f.severity == "acknowledge"
            else "blocking"
            if f.severity == "blocking"
            else "info"
        )
        findings.append(
            {
                "severity": f.severity,
                "rule": f.rule,
                "license": f.license,
                "records": f.records,
                "examples": list(f.examples),
                "message": f.message,
                "fix": f.fix,
                "status": status,
            }
        )
    return AuditEntry(
        kind=kind,
        target=target,
        source=source,
        verdict=report.verdict,
        summary=summary(report),
        explanation=explain(report),
        license=report.license.expression,
        use=report.license.use,
        records=report.records,
        findings=findings,
    )


# ----------------------------------------------------------------------------- samples


def _samples(root: Path, data: ReportData) -> None:
    """The first records of the last export that kept any: what a reader of the dataset sees."""

    exports = [r for r in data.funnel if r.kind == "export" and r.totals.get("kept")]
    if not exports:
        return
    stage = exports[-1].stage
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", stage):
        return
    folder = root / "stages" / stage
    try:
        manifest = StageManifest.model_validate_json((folder / MANIFEST).read_bytes())
        for record in read_shards(folder, [s.kept_file for s in manifest.shards]):
            data.samples.append(record)
            if len(data.samples) >= SAMPLES:
                break
    except (OSError, ValueError, StoreError) as exc:
        data.problems.append(f"samples of export {stage!r}: {exc}")
    data.samples_from = stage
    sidecar = _read_json(root / "export" / stage / DATASET_SIDECAR, [])
    if isinstance(sidecar, dict):
        data.samples_license = str(sidecar["license"]) if sidecar.get("license") else None
        data.samples_format = str(sidecar["format"]) if sidecar.get("format") else None
