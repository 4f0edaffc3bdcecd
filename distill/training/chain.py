"""Running trainers: a chain of steps, each starting from the previous one's output.

`train_chain` runs steps into `output/<step name>/`. A step that finished in an earlier run
(its lineage marker carries the same fingerprint of trainer, options, data and student) is
not trained again; a killed one resumes from its last complete checkpoint; an output folder
that holds a run with other settings is refused rather than mixed. After each step the main
process writes the student's lineage and card (`distill.training.lineage`).

`python -m distill.training job.json` runs a chain from a JSON job
file; the same command runs under `accelerate launch` with several processes, e.g.
`accelerate launch --multi_gpu --num_processes 2 -m distill.training job.json` (on a machine
without GPUs the processes train on the CPU over gloo).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

import distill.training.lineage as lineage
from distill.config.errors import format_validation_error
from distill.config.loader import interpolate
from distill.environment import environment
from distill.errors import ConfigError, DistillError, PluginError, StoreError, scrub
from distill.io.store import write_json
from distill.layout import CHECKPOINTS, MODEL_MARKER, TRAIN_STATE
from distill.models.embedded import read_marker
from distill.models.folders import library_bars_off, resolve_student
from distill.plugin import Options, PluginContext
from distill.records import LicenseTag
from distill.registry import make_registry
from distill.trainer import DatasetRef, Tracking, TrainJob, TrainOptions, TrainResult, TrainStep, is_main_process
from distill.training.adapters import merged_folder
from distill.training.checkpoints import barrier, drop_incomplete_checkpoints, last_checkpoint
from distill.training.hardware import estimate_params, plan_hardware


def train_chain(
    steps: list[TrainStep],
    student: str,
    output_dir: Path,
    context: PluginContext,
    *,
    name: str | None = None,
    student_license: str | None = None,
    stale_dir: Path | None = None,
    tracking: Tracking | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[TrainResult]:
    """Run `steps` in order into `output_dir/<step name>/`; a step finished in an earlier run is
    skipped, a killed one resumes from its last complete checkpoint. A step folder holding a run
    with other settings, data or student is refused, or, given `stale_dir` (a pipeline's, whose
    upstream stages changed), moved there like any stale stage output: never deleted.

    `tracking`: the chain's trackers, each step under its own name; `on_progress` hears each
    step's `train_step`, `step`, `max_steps` and `loss` as training goes."""

    output_dir = Path(output_dir)
    results: list[TrainResult] = []
    outputs: dict[str, Path] = {}
    previous: Path | None = None
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ConfigError(f"train steps need unique names, got {names}")
    for i, step in enumerate(steps):
        who = step.trainer.name
        ref = step.student
        if ref is None:
            start = previous if previous is not None else resolve_student(student, context.base_dir, who)
        elif ref in outputs:
            start = outputs[ref]
        else:
            start = resolve_student(ref, context.base_dir, who)
        start = _full_weights(start, who)
        out = output_dir / step.name
        step.trainer.setup(context)
        try:
            summary = lineage.step_inputs(step, start, student_license=student_license)
            if stale_dir is not None:
                _set_aside_if_stale(out, summary["fingerprint"], stale_dir / f"{output_dir.name}.{step.name}")
            done = _finished(out, summary["fingerprint"])
            if done is not None:
                result = done
            else:
                result = _run_step(
                    step, start, out, outputs, summary["fingerprint"], (tracking or Tracking()), on_progress
                )
                model_name = name or output_dir.name
                if i < len(steps) - 1:
                    model_name = f"{model_name}-{step.name}"
                if is_main_process():
                    lineage.write(out, result, step, summary, name=model_name)
                barrier()
                if not step.trainer.options.keep_checkpoints and is_main_process():
                    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        finally:
            step.trainer.close()
        results.append(result)
        outputs[step.name] = previous = result.model_path
    return results


def _full_weights(start: Path, who: str) -> Path:
    """A causal-LM adapter is started from merged into its base (see `merged_folder`)."""
    config = start / "adapter_config.json"
    if start.is_dir() and config.is_file() and not (start / "config.json").is_file():
        if json.loads(config.read_text()).get("task_type") == "CAUSAL_LM":
            if is_main_process():
                merged_folder(start, who)
            barrier()
            return start / "merged"
    return start


def _set_aside_if_stale(out: Path, fingerprint: str, dest_prefix: Path) -> None:
    from datetime import datetime

    state = _read_json(out / TRAIN_STATE)
    if state is not None and state.get("fingerprint") != fingerprint and is_main_process():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        dest_prefix.parent.mkdir(parents=True, exist_ok=True)
        out.replace(dest_prefix.with_name(f"{dest_prefix.name}-{stamp}"))
    barrier()


def _finished(out: Path, fingerprint: str) -> TrainResult | None:
    state = _read_json(out / TRAIN_STATE)
    if state is not None and state.get("fingerprint") != fingerprint:
        raise StoreError(
            f"{out} holds a training run with other settings, data or student; "
            "delete it or choose another output folder"
        )
    marker = read_marker(out) if (out / MODEL_MARKER).is_file() else None
    if marker is None or marker.get("fingerprint") != fingerprint:
        return None
    merged = out / "merged" if (out / "merged").is_dir() else None
    return TrainResult(
        model_path=merged or out,
        metrics=marker.get("metrics", {}),
        global_step=marker.get("global_step", 0),
        adapter=marker.get("kind") == "adapter",
        merged_path=merged,
        resumed_from=marker.get("resumed_from"),
        influences=[tuple(x) for x in marker.get("influences_paths", [])],
        skipped=True,
    )


def _run_step(
    step: TrainStep,
    start: Path,
    out: Path,
    outputs: dict[str, Path],
    fingerprint: str,
    tracking: Tracking,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> TrainResult:
    options = step.trainer.options
    assert isinstance(options, TrainOptions)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        if not (out / TRAIN_STATE).is_file():
            write_json(out / TRAIN_STATE, {"fingerprint": fingerprint, "trainer": step.trainer.name})
    resume = last_checkpoint(out / CHECKPOINTS)
    if is_main_process() and (out / CHECKPOINTS).is_dir():
        drop_incomplete_checkpoints(out / CHECKPOINTS, resume)
    barrier()
    hardware = plan_hardware(
        options.precision,
        options.gradient_checkpointing,
        params=estimate_params(start),
        adapter=options.lora is not None,
    )
    job = TrainJob(
        student=start,
        datasets=step.datasets,
        output_dir=out,
        hardware=hardware,
        resume_from=resume,
        outputs=dict(outputs),
        tracking=tracking.for_step(step.name),
        report=(lambda figures: on_progress({"train_step": step.name, **figures})) if on_progress else None,
    )
    if on_progress is not None:
        on_progress({"train_step": step.name, "step": None, "max_steps": None, "loss": None})
    try:
        with library_bars_off(), environment(job.tracking.environment()):
            result = step.trainer.train(job)
    except DistillError:
        raise
    except Exception as exc:
        raise PluginError(
            f"trainer plugin {step.trainer.name!r} (step {step.name!r}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    result.resumed_from = str(resume) if resume is not None else None
    result.hardware = hardware
    return result


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------- job files


class JobStep(Options):
    name: str
    trainer: str = Field(description="Registered trainer plugin name.")
    options: dict[str, Any] = Field(default_factory=dict)
    datasets: list[Path] = Field(min_length=1)
    student: str | None = None


class Job(Options):
    """A chain as a JSON file, for `python -m distill.training` and `accelerate launch`."""

    student: str
    output: Path
    name: str | None = None
    student_license: str | None = None
    #: Where a step folder from a run with other inputs goes (a pipeline's `OUT/stale/`); None refuses it.
    stale_dir: Path | None = None
    dataset_licenses: dict[str, LicenseTag] = Field(default_factory=dict, description="By dataset path.")
    steps: list[JobStep] = Field(min_length=1)
    #: The trackers (`distill.trainer.Tracking`): each step reports under `run_name/STEP`, and
    #: TensorBoard writes in `logging_dir/STEP`.
    report_to: list[str] = Field(default_factory=list)
    run_name: str | None = None
    logging_dir: Path | None = None

    @model_validator(mode="after")
    def _unique(self) -> Job:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique, got {names}")
        return self


def run_job(
    job: Job, base_dir: Path, registry: Any = None, on_progress: Callable[[dict[str, Any]], None] | None = None
) -> list[TrainResult]:
    registry = registry or make_registry()
    steps = []
    for s in job.steps:
        cls = registry.get("trainer", s.trainer).cls
        try:
            options = cls.Options.model_validate(s.options)
        except ValidationError as exc:
            where = f"step {s.name!r} ({s.trainer} trainer) options"
            raise ConfigError(format_validation_error(exc, cls.Options, prefix=where, header=False)) from None
        refs = [
            DatasetRef(
                path=p if p.is_absolute() else base_dir / p, name=p.name, license=job.dataset_licenses.get(str(p))
            )
            for p in s.datasets
        ]
        steps.append(TrainStep(trainer=cls(options), datasets=refs, name=s.name, student=s.student))
    out = job.output if job.output.is_absolute() else base_dir / job.output
    return train_chain(
        steps,
        job.student,
        out,
        PluginContext(base_dir=base_dir, progress=False),
        name=job.name,
        student_license=job.student_license,
        stale_dir=job.stale_dir,
        tracking=Tracking(tuple(job.report_to), job.run_name, job.logging_dir),
        on_progress=on_progress,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m distill.training job.json`: run a chain; prints the results as JSON lines."""

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m distill.training JOB.json", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        # A job file written by a run holds `${VAR}` placeholders, never secrets: resolved here.
        job = Job.model_validate(interpolate(json.loads(path.read_text())))
        results = run_job(job, path.resolve().parent)
    except DistillError as exc:
        print(scrub(f"error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except (OSError, ValueError) as exc:  # unreadable file, not JSON, not a job
        print(scrub(f"error: job file {path}: {exc}"), file=sys.stderr)
        return 2
    if is_main_process():
        for r in results:
            print(
                json.dumps(
                    {
                        "model_path": str(r.model_path),
                        "global_step": r.global_step,
                        "skipped": r.skipped,
                        "resumed_from": r.resumed_from,
                        "metrics": r.metrics,
                    }
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
