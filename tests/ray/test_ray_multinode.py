"""A two-node Ray cluster, joined by its address the way a real one is.

The nodes are two raylets on this machine with one CPU each, started by Ray's own
`ray.cluster_utils.Cluster`: separate processes with their own object stores and schedulers,
so the teacher replicas (one CPU each) must land on different nodes, and Ray Data's tasks and
shuffles move blocks between the nodes' object stores. The pipeline joins with `address:
HOST:PORT` (not a cluster it started), and every stage must write what a local run writes.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import worker_pythonpath
from fake_plugins import EchoTeacher
from test_ray_teachers import full_config, shards
from util import pipeline

from distill.hookspecs import hookimpl
from distill.plugin import PluginContext

pytestmark = pytest.mark.slow  # starts a two-node Ray cluster


class NodeEchoTeacher(EchoTeacher):
    """EchoTeacher that notes, in `OUT/nodes/`, the Ray node each of its replicas runs on."""

    name = "node-echo"

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        if context.remote_engine or context.state_dir is None:
            return
        import ray

        nodes = context.state_dir.parents[2] / "nodes"
        nodes.mkdir(exist_ok=True)
        (nodes / f"{ray.get_runtime_context().get_node_id()}-{os.getpid()}").touch()


class NodePlugins:
    @hookimpl
    def register_teachers(self, register: Any) -> None:
        register(NodeEchoTeacher)


@pytest.fixture(scope="module")
def two_nodes(request: pytest.FixtureRequest) -> Any:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray not installed (pip install 'distill[ray]')")
    import ray
    from ray.cluster_utils import Cluster

    patch = worker_pythonpath(request)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster.address
    ray.shutdown()
    cluster.shutdown()
    patch.undo()


def config(folder: Path, address: str | None = None) -> dict[str, Any]:
    """Every teacher stage, then length, exact-dedup and near-dedup filters: on the cluster at
    `address`, two teacher replicas per stage, or locally."""
    executor = {"executor": "ray", "ray": {"address": address, "actors": 2}} if address else None
    cfg = full_config(folder, teacher="node-echo", executor=executor)
    clean = next(s for s in cfg["stages"] if s["kind"] == "filter")
    clean["filters"].append({"plugin": "near-dedup", "options": {"field": "response"}})
    if address:
        clean.update(executor="ray", ray={"address": address})
    return cfg


def test_a_run_on_a_two_node_cluster_writes_what_a_local_run_writes(tmp_path, two_nodes):
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir(), remote.mkdir()
    pipeline(config(local), ("nodes", NodePlugins())).run()
    pipeline(config(remote, two_nodes), ("nodes", NodePlugins())).run()
    import ray

    assert ray.is_initialized() and len([n for n in ray.nodes() if n["Alive"]]) == 2
    nodes = {p.name.rsplit("-", 1)[0] for p in (remote / "out" / "nodes").iterdir()}
    assert len(nodes) == 2  # the responses stage's two replicas ran one on each node
    for stage in ("instructions", "responses", "rank", "clean"):
        expected = shards(local / "out", stage)
        assert expected and shards(remote / "out", stage) == expected, stage
