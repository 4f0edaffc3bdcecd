"""Running trainer plugins: chains of steps, hardware planning, checkpoints, lineage."""

from distill.training.chain import (
    train_chain,
    fingerprint,
    JobStep,
    Job,
    run_job,
    main,
)

__all__ = [
    "train_chain",
    "fingerprint",
    "JobStep",
    "Job",
    "run_job",
    "main",
]
