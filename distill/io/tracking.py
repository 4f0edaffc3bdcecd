"""The pipeline's own figures in the run's experiment tracker.

The trainers report to the trackers themselves (TRL's `report_to`). What only distill knows,
each stage's counts, drop reasons and teacher calls, and each evaluation's scores, is written
here when the stage ends, from its `stage_end` event (`distill.io.runlog`), beside the trainers'
runs (for TensorBoard `OUT/tensorboard/RUN/pipeline/` next to `OUT/tensorboard/RUN/STAGE/STEP/`),
so one dashboard shows both. accelerate's trackers write them; they are imported when the
first stage ends, never when distill is imported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from distill.io.runlog import RunEvent
from distill.layout import TENSORBOARD_DIR

#: The trackers the pipeline's own stage figures are written to, through accelerate's tracker
#: classes (the trainers' metrics go to every tracker transformers knows).
STAGE_TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio", "comet_ml", "clearml", "dvclive", "swanlab")
#: The folder of the pipeline's figures under a run's TensorBoard folder.
PIPELINE_RUN = "pipeline"
#: Figures of a stage_end event that are words, not measurements.
_NOT_SCALARS = frozenset({"status", "error", "phase", "unit"})


def tensorboard_dir(output: Path, run_name: str) -> Path:
    """Where a run's TensorBoard logs go: one folder per run name, so runs compare side by side."""
    return output / TENSORBOARD_DIR / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_name)


def stage_scalars(event: RunEvent) -> dict[str, float]:
    """A finished stage's figures as TensorBoard tags: `STAGE/kept`, `STAGE/dropped/REASON` (not under `STAGE/rejected`: a file store cannot hold a metric and a folder of the same name),
    `STAGE/requests`, an evaluation's `STAGE/METRIC/CONTENDER`, a student's `STAGE/STEP/final_loss`."""
    stage = event.stage or "run"
    out: dict[str, float] = {}
    for key, value in event.figures.items():
        if key in _NOT_SCALARS:
            continue
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[f"{stage}/{key}"] = float(value)
        elif key == "reasons" and isinstance(value, Mapping):
            out.update({f"{stage}/dropped/{reason}": float(n) for reason, n in value.items()})
        elif key == "metrics" and isinstance(value, Mapping):
            for metric, scores in value.items():
                out.update({f"{stage}/{metric}/{c}": float(v) for c, v in scores.items() if v is not None})
        elif key == "steps" and isinstance(value, list):
            for s in value:
                for figure in ("global_step", "final_loss"):
                    if isinstance(s.get(figure), (int, float)):
                        out[f"{stage}/{s['step']}/{figure}"] = float(s[figure])
    return out


class StageMetricsWriter:
    """A run log listener: each stage run to its end is written to every tracker of the run that
    accelerate can write to (stages found complete are not written again: the run that made
    them did).

    accelerate's tracker classes do the talking to each service, so one code path serves them
    all; names are chosen to land beside the trainers' runs: the project (wandb, trackio) or
    experiment (mlflow) that transformers' own callbacks read from the environment, and the run
    `RUN/pipeline` next to their `RUN/STAGE/STEP`. A tracker that fails is reported once in the
    run log and left out; the figures are never a reason for a run to fail."""

    def __init__(self, trackers: list[str], tensorboard_dir: Path, run_name: str, warn: Callable[[str], None]) -> None:
        self.trackers = [t for t in trackers if t in STAGE_TRACKERS]
        self.tensorboard_dir, self.run_name, self.warn = tensorboard_dir, run_name, warn
        self._open: dict[str, Any] = {}
        self._failed: set[str] = set()

    def __call__(self, event: RunEvent) -> None:
        if event.event != "stage_end" or event.figures.get("status") != "done":
            return
        scalars = stage_scalars(event)
        if not scalars:
            return
        for name in self.trackers:
            if name in self._failed:
                continue
            try:
                tracker = self._tracker(name)
                values = scalars if name == "tensorboard" else {_metric_name(k): v for k, v in scalars.items()}
                tracker.log(values, step=0)
                if name == "tensorboard":
                    tracker.writer.flush()
            except Exception as exc:
                self._failed.add(name)
                self.warn(f"tracking: the stages' figures could not be written to {name}: {type(exc).__name__}: {exc}")

    def _tracker(self, name: str) -> Any:
        if name not in self._open:
            from accelerate.tracking import LOGGER_TYPE_TO_CLASS

            cls = LOGGER_TYPE_TO_CLASS[name]
            run = f"{self.run_name}/{PIPELINE_RUN}"
            if name == "tensorboard":
                self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
                tracker = cls(PIPELINE_RUN, self.tensorboard_dir)
            elif name == "mlflow":  # as transformers' callback: MLFLOW_EXPERIMENT_NAME, else MLflow's default
                tracker = cls(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default", run_name=run)
            elif name in ("wandb", "trackio"):
                project = os.environ.get(f"{name.upper()}_PROJECT", "huggingface")
                tracker = cls(project, name=run)
            else:
                tracker = cls(run)
            start = getattr(tracker, "start", None)
            if start is not None:
                start()
            self._open[name] = tracker
        return self._open[name]

    def close(self) -> None:
        for name, tracker in self._open.items():
            try:
                tracker.finish()
            except Exception as exc:
                self.warn(f"tracking: closing {name}: {type(exc).__name__}: {exc}")
        self._open.clear()


def _metric_name(tag: str) -> str:
    """A tag as the services other than TensorBoard accept it (MLflow's rule is the strictest:
    letters, digits, `_ - . : /` and spaces)."""
    return re.sub(r"[^A-Za-z0-9_\-.:/ ]", "_", tag)
