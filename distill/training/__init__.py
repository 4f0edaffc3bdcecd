"""Running trainer plugins: chains of steps, hardware planning, checkpoints, lineage."""

from distill.training.chain import (
    Job,
    JobStep,
    main,
    run_job,
    train_chain,
)
from distill.training.lineage import fingerprint

__all__ = [
    "train_chain",
    "fingerprint",
    "JobStep",
    "Job",
    "run_job",
    "main",
]
