"""The pipeline's own figures in the run's experiment tracker.

The trainers report to the trackers themselves (TRL's `report_to`). What only distill knows,
each stage's counts, drop reasons and teacher calls, and each evaluation's scores, is written
here when the stage ends, from its `stage_end` event (`distill.io.runlog`), beside the trainers'
logs (`OUT/tensorboard/RUN/pipeline/` next to `OUT/tensorboard/RUN/STAGE/STEP/`), so one
TensorBoard shows both. torch's `SummaryWriter` is used, or tensorboardX's where torch is not
installed; either is imported when the first stage ends, never when distill is imported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distill.io.runlog import RunEvent
from distill.layout import TENSORBOARD_DIR

#: The folder of the pipeline's figures under a run's TensorBoard folder.
PIPELINE_RUN = "pipeline"
#: Figures of a stage_end event that are words, not measurements.
_NOT_SCALARS = frozenset({"status", "error", "phase", "unit"})


def tensorboard_dir(output: Path, run_name: str) -> Path:
    """Where a run's TensorBoard logs go: one folder per run name, so runs compare side by side."""
    return output / TENSORBOARD_DIR / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_name)


def stage_scalars(event: RunEvent) -> dict[str, float]:
    """A finished stage's figures as TensorBoard tags: `STAGE/kept`, `STAGE/rejected/REASON`,
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
            out.update({f"{stage}/rejected/{reason}": float(n) for reason, n in value.items()})
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
    """A run log listener: each stage run to its end is written to TensorBoard (stages found
    complete are not written again: the run that made them did)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer: Any = None

    def __call__(self, event: RunEvent) -> None:
        if event.event != "stage_end" or event.figures.get("status") != "done":
            return
        scalars = stage_scalars(event)
        if not scalars:
            return
        writer = self._open()
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, 0)
        writer.flush()

    def _open(self) -> Any:
        if self._writer is None:
            import importlib

            try:
                module = importlib.import_module("torch.utils.tensorboard")
            except ImportError:
                module = importlib.import_module("tensorboardX")
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = module.SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
