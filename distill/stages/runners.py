"""Which runner runs each kind of stage. Every runner has the same signature (`StageRunner`)."""

from __future__ import annotations

from typing import Any, Protocol

from distill.io.store import StageStore
from distill.stages.context import RunContext
from distill.stages.evaluate import run_evaluate_stage
from distill.stages.records import run_export_stage, run_filter_stage, run_generate_stage, run_rank_stage
from distill.stages.review import run_review_stage
from distill.stages.train import run_train_stage


class StageRunner(Protocol):
    def __call__(self, run: RunContext, i: int, stage: Any, upstream: StageStore, /) -> StageStore:
        """Run `stage` (the config's `stages[i]`) on `upstream`'s records; return the next stage's input."""
        ...


#: stage `kind` (the config's `stages[].kind`) -> its runner
RUNNERS: dict[str, StageRunner] = {
    "generate": run_generate_stage,
    "rank": run_rank_stage,
    "filter": run_filter_stage,
    "review": run_review_stage,
    "export": run_export_stage,
    "train": run_train_stage,
    "evaluate": run_evaluate_stage,
}
