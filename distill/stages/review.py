"""The `review` stage: the decisions people made on the stage before it, applied to its records.

Its digest includes the decisions file, so reviewing more and running again redoes this stage
and everything after it, and nothing before. Records the stage before it dropped come back
only when a reviewer accepted them.
"""

from __future__ import annotations

import time
from typing import Any

from distill.config.stages import ReviewStage
from distill.errors import DistillError
from distill.executor.local import StageContext
from distill.io.progress import StageProgress
from distill.io.store import StageStore
from distill.records import Record
from distill.review.apply import apply_review
from distill.review.decisions import DecisionLog, RecordReview, agreement, decisions_path
from distill.stages.context import RunContext
from distill.stages.digests import digest as stage_digest
from distill.stages.digests import file_digest
from distill.stages.records import finish, open_store, record_digest, stage_context

BATCH = 500


class ReviewPending(DistillError):
    """`unreviewed: wait` and some records have no decision yet."""

    exit_code = 1


def run_review_stage(run: RunContext, i: int, stage: ReviewStage, upstream: StageStore) -> StageStore:
    path = decisions_path(run.output, upstream.stage)
    digest = stage_digest(record_digest(run, i, stage, upstream), "decisions", file_digest(path))
    store = open_store(run, stage.name, stage.kind, digest)
    if store is None:
        return StageStore(run.output, stage.name, stage.kind, digest)
    started = time.monotonic()
    log = DecisionLog(path)
    states = log.by_record(stage.reviewers)
    rescued = [r for r in upstream.rejected() if _accepted(states.get(r.id, {}))]
    inputs: list[Record] = [*upstream.kept(), *rescued]
    waiting = [r.id for r in inputs if not any(s.decided for s in states.get(r.id, {}).values())]
    if stage.unreviewed == "wait" and waiting:
        raise ReviewPending(
            f"stage {stage.name!r}: {len(waiting)} of {len(inputs)} records of stage {upstream.stage!r} have no "
            f"decision yet; review them with `distill review {run.output} --stage {upstream.stage}`, "
            "or set `unreviewed: keep` (or `drop`)"
        )
    if waiting:
        run.log(f"stage {stage.name!r}: {len(waiting)} of {len(inputs)} records not reviewed ({stage.unreviewed} them)")
    with StageProgress(stage.name, len(inputs), run.progress, run.live) as bar:
        ctx = stage_context(run, store, bar)
        for b in range(store.next_index, (len(inputs) + BATCH - 1) // BATCH):
            _commit(ctx, stage, inputs[b * BATCH : (b + 1) * BATCH], states)
            bar.advance(min(BATCH, len(inputs) - b * BATCH))
    review: dict[str, Any] = {
        "decisions_file": str(path.relative_to(run.output)),
        "decisions": len(log.decisions),
        "rescued": len(rescued),
        "unreviewed": len(waiting),
        "agreement": agreement(states),
    }
    finish(run, store, started, extra={"review": review})
    return store


def _commit(
    ctx: StageContext, stage: ReviewStage, chunk: list[Record], states: dict[str, dict[str, RecordReview]]
) -> None:
    kept: list[Record] = []
    rejected: list[Record] = []
    for record in chunk:
        record = record.model_copy(deep=True)
        outcome = apply_review(
            record, states.get(record.id, {}), stage=stage.name, conflicts=stage.conflicts, license=stage.license
        )
        if not outcome.decided and stage.unreviewed == "drop":
            record.add_event(stage.name, "dropped", plugin="human", reason="not reviewed")
            rejected.append(record)
        elif outcome.kept:
            kept.append(record)
        else:
            rejected.append(record)
    ctx.commit(kept, rejected, inputs=len(chunk))


def _accepted(by: dict[str, RecordReview]) -> bool:
    return any(state.verdict == "accept" for state in by.values())
