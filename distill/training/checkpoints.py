"""Checkpoints a killed training run resumes from: only complete ones count."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest *complete* checkpoint (its trainer_state.json is written last), or None."""
    if not checkpoint_dir.is_dir():
        return None
    done = [
        p
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def drop_incomplete_checkpoints(checkpoint_dir: Path, keep: Path | None) -> None:
    """Remove checkpoints newer than `keep` that a kill left half-written."""
    floor = int(keep.name.split("-")[-1]) if keep is not None else -1
    for p in checkpoint_dir.glob("checkpoint-*"):
        step = p.name.split("-")[-1]
        if step.isdigit() and int(step) > floor and not (p / "trainer_state.json").is_file():
            shutil.rmtree(p, ignore_errors=True)


def barrier() -> None:
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
