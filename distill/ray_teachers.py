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

Ray is imported only inside these functions; `import distill` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

from distill.errors import ConfigError, PluginError
from distill.plugin import PluginContext
from distill.records import Generator
from distill.teacher import ChatRequest, ModelInfo, Sample, Teacher, Usage


class _Replica:
    """One replica of the stage's teacher, living in a Ray actor."""

    def __init__(self, cls: type[Teacher], options: Any, version: str | None, package: str | None,
                 base_dir: str, state_dir: str | None) -> None:
        self.error: str | None = None
        self.teacher: Teacher | None = None
        try:
            teacher = cls(options)
            teacher.plugin_version = version  # type: ignore[misc]  # the registry's, not this process's
            teacher.plugin_package = package  # type: ignore[misc]
            teacher.setup(PluginContext(base_dir=Path(base_dir), progress=False,
                                        state_dir=Path(state_dir) if state_dir else None))
            self.teacher = teacher
        except Exception as exc:  # noqa: BLE001 - reported by `ready`, with the plugin's name
            self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> tuple[str | None, str]:
        import ray

        node = ray.get_runtime_context().get_node_id()
        return self.error, f"node {ray.util.get_node_ip_address()} {node[:8]}, pid {os.getpid()}"

    def run(self, requests: list[ChatRequest]) -> Iterator[tuple[int, Any]]:
        """(index in `requests`, samples) per completed request; (-1, why) and stop on failure."""
        assert self.teacher is not None
        try:
            for j, samples in self.teacher.iter_generate(requests):
                yield j, samples
        except Exception as exc:  # noqa: BLE001 - the driver names the plugin and the actor
            yield -1, f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        if self.teacher is not None:
            self.teacher.close()


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
        results: list[list[Sample]] = [[] for _ in requests]
        for i, samples in self.iter_generate(requests):
            results[i] = samples
        return results

    def iter_generate(self, requests: list[ChatRequest]) -> Iterator[tuple[int, list[Sample]]]:
        """Yield each request's samples as any replica finishes it. When a replica fails, the
        others' results are still collected (and so cached) before the error is raised."""
        import ray

        streams: dict[Any, tuple[int, int]] = {}
        for k, (start, share) in enumerate(_shares(requests, len(self.actors))):
            if share:
                streams[self.actors[k].run.options(num_returns="streaming").remote(share)] = (k, start)
        errors: list[str] = []
        pending = list(streams)
        while pending:
            ready, _ = ray.wait(pending, num_returns=1)
            stream = ready[0]
            k, start = streams[stream]
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
            yield start + j, out
        if errors:
            raise RuntimeError("; ".join(errors))

    def close(self) -> None:
        """Stop every replica (engines release their memory and GPUs), then the actors."""
        import ray

        actors, self.actors = self.actors, []
        try:
            ray.get([a.close.remote() for a in actors], timeout=60)
        except Exception:  # noqa: BLE001 - closing is best effort; the actors go anyway
            pass
        for a in actors:
            ray.kill(a)


def _shares(requests: list[ChatRequest], count: int) -> list[tuple[int, list[ChatRequest]]]:
    """Contiguous shares as equal as can be: (offset, requests) per replica."""
    size, extra = divmod(len(requests), count)
    out: list[tuple[int, list[ChatRequest]]] = []
    start = 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        out.append((start, requests[start:end]))
        start = end
    return out


def cause(exc: BaseException) -> str:
    from distill.ray_filters import _cause

    return _cause(exc)


def start_replicas(teacher: Teacher, options: Any, stage: str, log: Callable[[str], None] = lambda m: None) -> RayTeacher:
    """Start `options.actors` replicas of `teacher` (already set up on the driver, as a stand-in)
    on the configured cluster; return the stand-in the stage's caller uses."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"stage {stage!r}: executor: ray needs Ray: pip install 'distill[ray]'")
    import ray

    from distill.ray_filters import connect

    connect(options)
    _check_resources(options, stage, log)
    context = getattr(teacher, "context", None)
    base_dir = str(getattr(context, "base_dir", None) or Path.cwd())
    state_dir = getattr(context, "state_dir", None)
    remote = ray.remote(_Replica)
    what = f"teacher plugin {teacher.name!r} (stage {stage!r})"
    actors = []
    for i in range(options.actors):
        try:
            replica_options = teacher.replica_options(i, options.actors)
        except PluginError:
            raise
        except Exception as exc:  # noqa: BLE001 - named
            raise PluginError(f"{what} cannot be split into {options.actors} replicas: "
                              f"{type(exc).__name__}: {exc}") from exc
        actors.append(remote.options(num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor,
                                     max_concurrency=1).remote(
            type(teacher), replica_options, teacher.plugin_version, teacher.plugin_package, base_dir,
            str(Path(state_dir) / f"replica-{i}") if state_dir is not None else None))
    log(f"stage {stage!r}: starting {options.actors} replica(s) of {what} in Ray actors")
    try:
        states = _wait_ready(actors, stage, log)
    except ray.exceptions.RayError as exc:
        for a in actors:
            ray.kill(a)
        raise PluginError(f"{what} could not start in a Ray actor: {cause(exc)} (are distill and the plugin "
                          f"installed on every node?)") from exc
    failed = [(k, err, where) for k, (err, where) in enumerate(states) if err is not None]
    pool = RayTeacher(teacher, actors, [where for _, where in states])
    if failed:
        pool.close()
        k, err, where = failed[0]
        raise PluginError(f"{what} failed to start on Ray actor {k + 1} of {len(actors)} ({where}): {err}")
    return pool


def _wait_ready(actors: list[Any], stage: str, log: Callable[[str], None], every: float = 60.0) -> list[Any]:
    """Each actor's (error, where) once its replica is set up. Engines can take minutes to
    start, so there is no deadline; but an actor Ray cannot place waits silently, so say so."""
    import ray

    refs = [a.ready.remote() for a in actors]
    waited = 0.0
    while True:
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=every)
        if not pending:
            return ray.get(refs)
        waited += every
        log(f"stage {stage!r}: {len(pending)} of {len(refs)} teacher replica(s) not started after {waited:.0f} s "
            f"(loading an engine, or waiting for resources no node has free: see `ray status`)")


def _check_resources(options: Any, stage: str, log: Callable[[str], None]) -> None:
    """Ray waits forever for an actor no node can hold: say so now. A cluster with an autoscaler
    may grow, so on an existing cluster this is a warning, on the local one an error."""
    import ray

    have = ray.cluster_resources()
    short = [f"{need:g} {name} ({options.actors} actors x {per:g}) but the cluster has {have.get(name, 0):g}"
             for name, per in (("CPU", options.cpus_per_actor), ("GPU", options.gpus_per_actor))
             if (need := per * options.actors) > have.get(name, 0) + 1e-9]
    if not short:
        return
    msg = f"stage {stage!r}: ray: the teacher's replicas need " + "; ".join(short)
    if options.address is None:
        raise ConfigError(msg + " (lower ray.actors, ray.cpus_per_actor or ray.gpus_per_actor, or raise "
                                "ray.num_cpus)")
    log(f"warning: {msg}; waiting for the cluster to provide them")
