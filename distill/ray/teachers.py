"""Teacher replicas in Ray actors, for generate and rank stages with `executor: ray`.

The driver keeps everything that makes a stage durable and its records those of a local run:
it builds the requests (seeded from the run seed and the record), answers what it can from the
request cache, stamps provenance and commits every shard. Only cache misses travel. Each batch's
misses are split into contiguous shares, one per actor; every actor holds its own replica of
the teacher plugin (one vLLM engine, one transformers model, or one API client with its share of
the teacher's concurrency and rate limits) and streams each request's samples back the moment
it has them (a Ray streaming generator). The driver caches each one at once, so a batch that
fails, or a run that is killed, never pays twice for a call that completed; and since every
request carries its own seed, which replica answers it does not change its text.

Why actors, and not Ray Data's `map_batches` with an actor pool: that pool lives as long as one
dataset, while a stage's batches are committed one after another (self-instruct rounds and
judges depend on what came before), so every batch would start its engines again (vLLM: half a
minute to minutes); and a block comes back only when it is whole, so a failure would lose the
completed calls inside it. Ray's actors and streaming generators give both for free; the
scheduling (placement, GPUs per actor, restarts of the cluster) stays Ray's.

The actors themselves are `distill.ray.replicas`'s. Ray is imported only inside functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from distill.ray.replicas import cause, shares, start, stop
from distill.records import Generator
from distill.teacher import ChatRequest, ModelInfo, Sample, Teacher, Usage, in_order


class RayTeacher(Teacher):
    """Stands in for the stage's teacher on the driver: the same name, identity, sampling and
    generator entry (so cache keys and provenance are exactly a local run's), with generation
    done by the replicas."""

    def __init__(self, local: Teacher, actors: list[Any], where: list[str]) -> None:
        self.local = local
        self.options = local.options
        self.name = local.name  # type: ignore[misc]
        self.plugin_version = local.plugin_version  # type: ignore[misc]
        self.plugin_package = local.plugin_package  # type: ignore[misc]
        self.usage = Usage()
        self.actors = actors
        self.where = where

    def __repr__(self) -> str:
        return f"RayTeacher({self.local.name!r}, actors={len(self.actors)})"

    def model_info(self) -> ModelInfo:
        return self.local.model_info()

    def sampling(self) -> dict[str, Any]:
        return self.local.sampling()

    def generator(self, role: str = "generator") -> Generator:
        return self.local.generator(role=role)

    def generate(self, requests: list[ChatRequest]) -> list[list[Sample]]:
        return in_order(requests, self.iter_generate(requests))

    def iter_generate(self, requests: list[ChatRequest]) -> Iterator[tuple[int, list[Sample]]]:
        """Yield each request's samples as any replica finishes it. When a replica fails, the
        others' results are still collected (and so cached) before the error is raised."""
        import ray

        streams: dict[Any, tuple[int, int]] = {}
        for k, (offset, share) in enumerate(shares(requests, len(self.actors))):
            if share:
                streams[self.actors[k].generate.options(num_returns="streaming").remote(share)] = (k, offset)
        errors: list[str] = []
        pending = list(streams)
        while pending:
            ready, _ = ray.wait(pending, num_returns=1)
            stream: Any = ready[0]
            k, offset = streams[stream]
            try:
                j, out = ray.get(next(stream))
            except StopIteration:
                pending.remove(stream)
                continue
            except ray.exceptions.RayError as exc:  # the actor died (killed, out of memory, node lost)
                errors.append(f"Ray actor {k + 1} of {len(self.actors)} ({self.where[k]}): {cause(exc)}")
                pending.remove(stream)
                continue
            if j < 0:
                errors.append(f"on Ray actor {k + 1} of {len(self.actors)} ({self.where[k]}): {out}")
                continue
            self.usage.requests += 1
            self.usage.prompt_tokens += sum(s.prompt_tokens or 0 for s in out[:1])
            self.usage.completion_tokens += sum(s.completion_tokens or 0 for s in out)
            yield offset + j, out
        if errors:
            raise RuntimeError("; ".join(errors))

    def close(self) -> None:
        """Stop every replica (engines release their memory and GPUs), then the actors."""
        actors, self.actors = self.actors, []
        stop(actors)


def start_replicas(
    teacher: Teacher, options: Any, stage: str, log: Callable[[str], None] = lambda m: None
) -> RayTeacher:
    """Start `options.actors` replicas of `teacher` (set up on the driver as a stand-in) with
    their shares of its limits (`Teacher.replica_options`); the stand-in the stage's caller uses."""
    actors, where = start(teacher, options, stage, teacher.replica_options, log)
    return RayTeacher(teacher, actors, where)
