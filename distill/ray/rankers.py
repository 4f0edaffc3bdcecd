"""A rank stage's own ranker in Ray actors (`executor: ray` on a stage without a judge teacher).

A reward model (or any ranker that runs a model itself) is set up once per actor, on the GPUs
Ray gives it; each batch's rankable records are split into contiguous shares, one per actor,
and the verdicts come back in order. The driver does everything else exactly as locally
(`distill.executor.teachers.run_rank`): it writes the scores, promotes the best answer, records the
ranker's models in provenance and commits the shard. A ranker with a judge teacher keeps its
ranker on the driver and runs the teacher's replicas instead (`distill.ray.teachers`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distill.ranker import Judge, Ranker
from distill.ray.replicas import cause, shares, start, stop
from distill.records import Generator, Record
from distill.task import Reject


class RayRanker(Ranker):
    """Stands in for the stage's ranker: its name, version and models, scores from the replicas."""

    def __init__(self, local: Ranker, actors: list[Any], where: list[str]) -> None:
        self.local = local
        self.options = local.options
        self.name = local.name  # type: ignore[misc]
        self.plugin_version = local.plugin_version  # type: ignore[misc]
        self.plugin_package = local.plugin_package  # type: ignore[misc]
        self.actors = actors
        self.where = where

    def generators(self) -> list[Generator]:
        return self.local.generators()

    def score_batch(self, records: list[Record], judge: Judge | None) -> list[list[float] | Reject]:
        import ray

        parts = [(k, share) for k, (_, share) in enumerate(shares(records, len(self.actors))) if share]
        refs = [self.actors[k].score.remote(share) for k, share in parts]
        verdicts: list[list[float] | Reject] = []
        errors: list[str] = []
        for (k, share), ref in zip(parts, refs):
            where = f"Ray actor {k + 1} of {len(self.actors)} ({self.where[k]})"
            try:
                ok, out = ray.get(ref)
            except ray.exceptions.RayError as exc:
                errors.append(f"{where}: {cause(exc)}")
                continue
            if not ok:
                errors.append(f"on {where}: {out}")
            elif len(out) != len(share):  # run_rank's own check needs the counts per share to add up
                errors.append(f"on {where}: {len(out)} results for {len(share)} records")
            else:
                verdicts.extend(out)
        if errors:
            raise RuntimeError("; ".join(errors))
        return verdicts

    def close(self) -> None:
        actors, self.actors = self.actors, []
        stop(actors)
        self.local.close()


def start_replicas(ranker: Ranker, options: Any, stage: str, log: Callable[[str], None] = lambda m: None) -> RayRanker:
    """Start `options.actors` replicas of `ranker` (set up on the driver as a stand-in)."""
    actors, where = start(ranker, options, stage, lambda i, n: ranker.options.model_copy(deep=True), log)
    return RayRanker(ranker, actors, where)
