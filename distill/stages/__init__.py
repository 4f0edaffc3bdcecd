"""How each kind of stage turns its input into committed shards."""

from distill.executor.local import (
    derive_seed,
    StageContext,
    run_map,
    run_expand,
    run_filters,
    run_export,
    run_rank,
)

__all__ = [
    "derive_seed",
    "StageContext",
    "run_map",
    "run_expand",
    "run_filters",
    "run_export",
    "run_rank",
]
