"""The `train` stage: the run's own exports train a student through a chain of trainer plugins.

The stage writes no shards: its durable state is the chain's (`distill.training.chain`): a finished
step is recognised by its fingerprint and not trained again, a killed one resumes from its
last complete checkpoint, one trained on other data or settings (its upstream stages changed)
is moved to `OUT/stale/models/` and trained again. Output goes to `OUT/models/<stage>/<step>/`. With `processes` above
1 the chain runs under `accelerate launch` from a job file that holds the config's raw
`${VAR}` placeholders, never their values (the launched processes resolve them from the
environment they inherit).

After the chain, the final student is audited against the config's `release:` policy (as a
model release) and its card, `NOTICE` and `audit.json` are rewritten to show the verdict,
every run, like an export's cards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.audit.base import audit
from distill.audit.report import to_json, to_markdown
from distill.audit.target import load_target
from distill.cards.model import write_student_cards
from distill.config.stages import TrainStage
from distill.errors import PluginError, scrub
from distill.io.store import StageStore, atomic_write
from distill.layout import AUDIT_JSON, AUDIT_MD, CARD_README, MODEL_MARKER
from distill.stages.context import RunContext
from distill.training.chain import Job, JobStep, run_job

if TYPE_CHECKING:
    from distill.audit.base import AuditReport
    from distill.trainer import TrainResult

#: accelerate launch flags that choose the distributed setup; without one, distill adds DDP's.
_SETUP_FLAGS = ("--config_file", "--multi_gpu", "--use_fsdp", "--use_deepspeed", "--cpu", "--use_megatron_lm")


@dataclass
class StudentResult:
    stage: str
    name: str
    path: Path
    steps: list[tuple[str, TrainResult]]
    verdict: str
    report: AuditReport


def job_for(run: RunContext, i: int, stage: TrainStage, raw: bool = False) -> Any:
    """The chain as a `distill.training.chain.Job`; `raw` keeps the config's `${VAR}` placeholders."""

    raw_steps = run.loaded.raw["stages"][i]["steps"]
    steps = []
    for j, s in enumerate(stage.steps):
        options = (raw_steps[j].get("options") or {}) if raw else s.options
        datasets = [(run.output / "export" / d).resolve() for d in s.data]
        steps.append(JobStep(name=s.name, trainer=s.trainer, options=options, datasets=datasets, student=s.student))
    student_license = run.licenses.normalize(stage.student_license) if stage.student_license else None
    tracking = run.config.tracking
    return Job(
        student=stage.student,
        output=(run.output / "models" / stage.name).resolve(),
        name=model_name(run, stage),
        student_license=student_license,
        steps=steps,
        stale_dir=(run.output / "stale" / "models").resolve(),
        report_to=tracking.report_to,
        run_name=f"{tracking.run_name or run.tracking_dir.name}/{stage.name}",
        logging_dir=(run.tracking_dir / stage.name).resolve(),
    )


def model_name(run: RunContext, stage: TrainStage) -> str:
    return stage.model_name or run.config.release.name or stage.name


def run_train_stage(run: RunContext, i: int, stage: TrainStage, upstream: StageStore) -> StageStore:
    """Train the student on the run's exports; the records pass on unchanged."""
    student = train_student(run, i, stage)
    run.result.students.append(student)
    steps = [
        {
            "step": name,
            "global_step": r.global_step,
            "final_loss": r.metrics.get("final_loss"),
            "status": "cached" if r.skipped else "trained",
        }
        for name, r in student.steps
    ]
    run.live.finish(
        "cached" if all(r.skipped for _, r in student.steps) else "done", steps=steps, audit=student.verdict
    )
    return upstream


def train_student(run: RunContext, i: int, stage: TrainStage) -> StudentResult:
    for s in stage.steps:
        for d in s.data:
            if not (run.output / "export" / d).is_dir():
                raise PluginError(
                    f"train stage {stage.name!r}, step {s.name!r}: export {d!r} has no dataset "
                    f"folder at {run.output / 'export' / d}"
                )
    job = job_for(run, i, stage)
    if stage.processes > 1:
        run.live.phase(f"training under accelerate with {stage.processes} processes")
        trained = _launch(run, i, stage)
        results = run_job(job, run.loaded.base_dir, run.registry)  # every step is finished now: reads the markers
        for r in results:
            r.skipped = not trained.get(str(r.model_path), False)
    else:
        results = run_job(job, run.loaded.base_dir, run.registry, on_progress=run.live.report)
    final = results[-1]
    report = audit_student(run, stage, final.model_path)
    return StudentResult(
        stage=stage.name,
        name=job.name,
        path=final.model_path,
        steps=list(zip([s.name for s in stage.steps], results)),
        verdict=report.verdict,
        report=report,
    )


def _launch(run: RunContext, i: int, stage: TrainStage) -> dict[str, bool]:
    """Run the chain under `accelerate launch`; returns which model folders were trained now."""

    job = job_for(run, i, stage, raw=True)
    path = Path(job.output) / "job.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, job.model_dump_json(indent=2).encode())
    args = list(stage.accelerate_args)
    setup = (
        []
        if any(a.split("=")[0] in _SETUP_FLAGS for a in args)
        else ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(stage.processes),
        "--main_process_port",
        "0",
        *setup,
        *args,
        "-m",
        "distill.training",
        str(path),
    ]
    run.log(f"stage {stage.name!r}: {' '.join(cmd[1:])}")
    done = subprocess.run(cmd, cwd=run.loaded.base_dir, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise PluginError(
            scrub(
                f"train stage {stage.name!r}: `accelerate launch` with {stage.processes} processes "
                f"exited with code {done.returncode}:\n{tail}"
            )
        )
    trained: dict[str, bool] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            try:
                row = json.loads(line)
                trained[row["model_path"]] = not row["skipped"]
            except (ValueError, KeyError, TypeError):
                continue
    return trained


def audit_student(run: RunContext, stage: TrainStage, folder: Path) -> AuditReport:
    """Audit the student as a model release and rewrite its cards to show the verdict."""

    target = load_target(folder, config=run.loaded.raw)
    report = audit(
        target.records,
        target.settings.release,
        run.licenses,
        run.audit_rules,
        target=f"models/{stage.name}",
        kind="student",
        models=run.config.models,
        warnings=target.warnings,
    )
    for f in {folder, folder.parent if folder.name == "merged" else folder / "merged"}:
        if (f / MODEL_MARKER).is_file():
            record_student_audit(f, report, run.licenses)
    run.audit_warning(f"train {stage.name!r}", report, f"the model {report.release.name!r}", str(folder / CARD_README))
    return report


def record_student_audit(folder: Path, report: AuditReport, registry: Any) -> None:
    """The audit beside the student (audit.json, AUDIT.md) and in its card and NOTICE."""

    carded = report.model_copy(update={"target": "."})  # no local paths in what gets published
    atomic_write(folder / AUDIT_JSON, to_json(carded).encode())
    atomic_write(folder / AUDIT_MD, to_markdown(carded).encode())
    marker = json.loads((folder / MODEL_MARKER).read_text())
    write_student_cards(folder, marker, registry, carded)
