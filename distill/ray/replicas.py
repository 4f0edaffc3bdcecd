"""Plugin replicas in Ray actors: one instance of a stage's plugin per actor, set up there.

Generate and rank stages with `executor: ray` run their teacher (`distill.ray.teachers`) or
their ranker (`distill.ray.rankers`) this way. The instance on the driver was set up with
`PluginContext.remote_engine` (it describes its model but loads no engine); each actor builds
its own from the same class and options (or the replica's share of them), sets it up as a
local run would, and keeps it for the whole stage, so an engine starts once per actor, not
once per batch. Placement, GPUs per actor and the cluster itself stay Ray's.

Ray is imported only inside these functions; `import distill` stays light.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from distill.errors import ConfigError, PluginError
from distill.plugin import Plugin, PluginContext
from distill.ray.cluster import connect
from distill.ray.cluster import remote_cause as cause

T = TypeVar("T")


class Replica:
    """One replica of a stage's plugin, living in a Ray actor."""

    def __init__(
        self,
        cls: type[Plugin],
        options: Any,
        version: str | None,
        package: str | None,
        base_dir: str,
        state_dir: str | None,
    ) -> None:
        self.error: str | None = None
        self.plugin: Any = None
        try:
            plugin = cls(options)
            plugin.plugin_version = version  # type: ignore[misc]  # the registry's, not this process's
            plugin.plugin_package = package  # type: ignore[misc]
            plugin.setup(
                PluginContext(base_dir=Path(base_dir), progress=False, state_dir=Path(state_dir) if state_dir else None)
            )
            self.plugin = plugin
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> tuple[str | None, str]:
        import ray

        node = ray.get_runtime_context().get_node_id()
        return self.error, f"node {ray.util.get_node_ip_address()} {node[:8]}, pid {os.getpid()}"

    def generate(self, requests: list[Any]) -> Iterator[tuple[int, Any]]:
        """A teacher's (index in `requests`, samples) per completed request; (-1, why) and stop on failure."""
        try:
            # Not `yield from`: Ray's streaming generator sends values, which a delegated
            # iterator (enumerate, a plugin's own iterator) cannot take.
            for j, samples in self.plugin.iter_generate(requests):  # noqa: UP028
                yield j, samples
        except Exception as exc:
            yield -1, f"{type(exc).__name__}: {exc}"

    def score(self, records: list[Any]) -> tuple[bool, Any]:
        """A ranker's verdicts for `records`: (True, verdicts), or (False, why)."""
        try:
            return True, self.plugin.score_batch(records, None)
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        if self.plugin is not None:
            self.plugin.close()


def shares(items: Sequence[T], count: int) -> list[tuple[int, list[T]]]:
    """Contiguous shares as equal as can be: (offset, items) per replica."""
    size, extra = divmod(len(items), count)
    out: list[tuple[int, list[T]]] = []
    start = 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        out.append((start, list(items[start:end])))
        start = end
    return out


def start(
    plugin: Plugin,
    options: Any,
    stage: str,
    replica_options: Callable[[int, int], Any],
    log: Callable[[str], None] = lambda m: None,
) -> tuple[list[Any], list[str]]:
    """Start `options.actors` replicas of `plugin` (set up on the driver as a stand-in) on the
    configured cluster; the actors, and where each runs."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"stage {stage!r}: executor: ray needs Ray: pip install 'distill[ray]'")
    import ray

    connect(options)
    _check_resources(options, stage, log)
    context = getattr(plugin, "context", None)
    base_dir = str(getattr(context, "base_dir", None) or Path.cwd())
    state_dir = getattr(context, "state_dir", None)
    remote = ray.remote(Replica)
    what = f"{plugin.kind} plugin {plugin.name!r} (stage {stage!r})"
    actors = []
    for i in range(options.actors):
        try:
            own = replica_options(i, options.actors)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{what} cannot be split into {options.actors} replicas: {type(exc).__name__}: {exc}"
            ) from exc
        # One call at a time, on the actor's main thread (engines install signal handlers there).
        actors.append(
            remote.options(num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor, max_concurrency=1).remote(
                type(plugin),
                own,
                plugin.plugin_version,
                plugin.plugin_package,
                base_dir,
                str(Path(state_dir) / f"replica-{i}") if state_dir is not None else None,
            )
        )
    log(f"stage {stage!r}: starting {options.actors} replica(s) of {plugin.kind} plugin {plugin.name!r} in Ray actors")
    try:
        states = _wait_ready(actors, stage, log)
    except ray.exceptions.RayError as exc:
        stop(actors)
        raise PluginError(
            f"{what} could not start in a Ray actor: {cause(exc)} (are distill and the plugin installed on every node?)"
        ) from exc
    failed = [(k, err, where) for k, (err, where) in enumerate(states) if err is not None]
    if failed:
        stop(actors)
        k, err, where = failed[0]
        raise PluginError(f"{what} failed to start on Ray actor {k + 1} of {len(actors)} ({where}): {err}")
    return actors, [where for _, where in states]


def stop(actors: list[Any]) -> None:
    """Close every replica (engines release memory and GPUs), then end the actors."""
    import ray

    try:
        ray.get([a.close.remote() for a in actors], timeout=60)
    except Exception:
        pass
    for a in actors:
        ray.kill(a)


def _wait_ready(actors: list[Any], stage: str, log: Callable[[str], None], every: float = 60.0) -> list[Any]:
    """Each actor's (error, where) once its replica is set up. Engines can take minutes to
    start, so there is no deadline; but an actor Ray cannot place waits silently, so say so."""
    import ray

    refs = [a.ready.remote() for a in actors]
    waited = 0.0
    while True:
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=every)
        if not pending:
            return ray.get(refs)
        waited += every
        log(
            f"stage {stage!r}: {len(pending)} of {len(refs)} replica(s) not started after {waited:.0f} s "
            f"(loading an engine, or waiting for resources no node has free: see `ray status`)"
        )


def _check_resources(options: Any, stage: str, log: Callable[[str], None]) -> None:
    """Ray waits forever for an actor no node can hold: say so now. A cluster with an autoscaler
    may grow, so on an existing cluster this is a warning, on the local one an error."""
    import ray

    have = ray.cluster_resources()
    short = [
        f"{need:g} {name} ({options.actors} actors x {per:g}) but the cluster has {have.get(name, 0):g}"
        for name, per in (("CPU", options.cpus_per_actor), ("GPU", options.gpus_per_actor))
        if (need := per * options.actors) > have.get(name, 0) + 1e-9
    ]
    if not short:
        return
    msg = f"stage {stage!r}: ray: the replicas need " + "; ".join(short)
    if options.address is None:
        raise ConfigError(msg + " (lower ray.actors, ray.cpus_per_actor or ray.gpus_per_actor, or raise ray.num_cpus)")
    log(f"warning: {msg}; waiting for the cluster to provide them")
