"""How long the OpenAI teacher waits under 429s, against the ideal schedule.

Workload: N requests at concurrency C through the fault proxy of tests/servers.py, which
answers a seeded share of attempts `429 Retry-After: S`. Upstream: the stub of
tests/servers.py (a known, fixed latency per answer) or a real vLLM server.

The ideal schedule: every successful attempt holds a slot for its latency, every requested
wait holds one slot for its length (retries keep their slot), nothing else waits, so

    ideal = (sum of latencies of successful attempts + sum of requested waits) / concurrency

Against the stub the latency sum is exact (the stub reports what it served); against vLLM it
is the proxy's measured upstream time. Pauses are measured from outside the teacher too: the
benchmark wraps `asyncio.sleep` as seen by the teacher's modules and adds up what each request
slept, and where (the caller's function name), so the old and the new policy are measured the
same way. Medians of the repeats go to the results file under the label given, next to the
other labels already there (the old behaviour is kept there, labelled with its commit).

    flock /tmp/distill-bench.lock python benchmarks/bench_backoff.py --label "new" --upstream stub
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the server helpers the tests use


class SleepProbe:
    """Stands in for `asyncio` in the teacher's modules: counts what `sleep` really slept, per
    request (asyncio task) and per calling function; everything else is asyncio's own."""

    def __init__(self) -> None:
        self.per_task: dict[int, float] = defaultdict(float)
        self.per_caller: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: Any = None) -> Any:
        caller = sys._getframe(1).f_code.co_name
        started = time.monotonic()
        try:
            return await asyncio.sleep(delay, result)
        finally:
            slept = time.monotonic() - started
            task = asyncio.current_task()
            self.per_task[id(task)] += slept
            self.per_caller[caller] += slept
            self.calls[caller] += 1


def install_probe() -> tuple[SleepProbe, list[tuple[Any, Any]]]:
    import importlib

    probe = SleepProbe()
    patched = []
    for name in ("distill_plugins.teachers.openai", "distill_plugins.teachers._api_retry"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "asyncio", None) is asyncio:
            patched.append((module, module.asyncio))
            module.asyncio = probe  # type: ignore[attr-defined]
    return probe, patched


def one_run(upstream_url: str, model: str, args: argparse.Namespace, seed: int, state: Path) -> dict[str, Any]:
    from servers import FaultProxy

    from distill.plugin import PluginContext
    from distill.records import Message
    from distill.teacher import ChatRequest
    from distill_plugins.teachers.openai import OpenAITeacher

    requests = [
        ChatRequest(messages=[Message(role="user", content=f"Request {i}: say one thing about tides.")], seed=i)
        for i in range(args.requests)
    ]
    probe, patched = install_probe()
    try:
        with FaultProxy(
            upstream_url, rate=args.rate, kinds=("429",), retry_after=str(args.retry_after), seed=seed
        ) as px:
            teacher = OpenAITeacher(
                model=model,
                base_url=px.base_url,
                concurrency=args.concurrency,
                max_tokens=args.max_tokens,
                max_retries=30,  # 0.3**31: no request may run out of retries and spoil the figure
                timeout=120,
            )
            teacher.setup(PluginContext(base_dir=state, progress=False, state_dir=state))
            teacher.generate(requests[:1])  # connections and the server's warm-up out of the timing
            px.reset_stats()
            latency_before = getattr(args, "_stub", None) and args._stub.latency_served
            probe.per_task.clear(), probe.per_caller.clear(), probe.calls.clear()
            started = time.perf_counter()
            done = sum(1 for _ in teacher.iter_generate(requests))
            wall = time.perf_counter() - started
            stats = px.stats
            pacing = getattr(teacher, "pacing", None)
            teacher.close()
    finally:
        for module, original in patched:
            module.asyncio = original
    assert done == args.requests, f"{done} of {args.requests} answered"
    refusals = stats.faults["429"]
    requested = refusals * args.retry_after
    if getattr(args, "_stub", None) is not None:
        latency_sum = args._stub.latency_served - latency_before
    else:
        latency_sum = stats.upstream_seconds
    ideal = (latency_sum + requested) / args.concurrency
    per_request = sorted(probe.per_task.values())
    row: dict[str, Any] = {
        "seed": seed,
        "wall_seconds": round(wall, 3),
        "ideal_seconds": round(ideal, 3),
        "ratio_wall_to_ideal": round(wall / ideal, 3),
        "no_fault_ideal_seconds": round(latency_sum / args.concurrency, 3),
        "refusals_429": refusals,
        "requested_wait_seconds": round(requested, 3),
        "paused_seconds_total": round(sum(per_request), 3),
        "paused_beyond_requested_seconds": round(sum(per_request) - requested, 3),
        "requests_paused": len(per_request),
        "paused_seconds_per_request_max": round(per_request[-1], 3) if per_request else 0.0,
        "paused_seconds_by_caller": {k: round(v, 3) for k, v in sorted(probe.per_caller.items())},
        "sleeps_by_caller": dict(sorted(probe.calls.items())),
        "upstream_latency_sum_seconds": round(latency_sum, 3),
        "attempts": stats.requests,
    }
    if pacing is not None:  # the teacher's own accounting, where it keeps one
        row["teacher_pacing"] = pacing.as_dict()
    return row


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in rows[0].items() if isinstance(v, int | float) and k != "seed"]
    return {k: round(statistics.median(float(r[k]) for r in rows), 3) for k in keys}


def commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "plugins/teachers"], capture_output=True, text=True
    )
    return out.stdout.strip() + ("+uncommitted plugins/teachers changes" if dirty.stdout.strip() else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", required=True, help="name of this measurement in the results, e.g. old or new")
    ap.add_argument("--upstream", choices=("stub", "vllm"), default="stub")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rate", type=float, default=0.3, help="share of attempts answered 429")
    ap.add_argument("--retry-after", type=int, default=1, help="seconds named in Retry-After")
    ap.add_argument("--latency", type=float, default=0.3, help="the stub's latency per answer, seconds")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--model-dir", type=Path, help="vLLM: a model folder to serve (default: a fresh tiny model)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/backoff.json")
    ap.add_argument(
        "--commit",
        help="the commit whose teacher is measured, when it is not this tree's (an older copy of "
        "distill_plugins put first on PYTHONPATH); default: this tree's HEAD",
    )
    args = ap.parse_args()
    args._stub = None
    # Now, not at the end: the teacher's code is imported (and so fixed) now too.
    measured_commit = args.commit or commit()
    from servers import StubUpstream, vllm_server

    import distill_plugins.teachers.openai as measured

    load_before = round(os.getloadavg()[0], 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.upstream == "stub":
            with StubUpstream(args.latency) as stub:
                args._stub = stub
                for rep in range(args.repeats):
                    rows.append(one_run(stub.base_url, stub.model, args, args.seed + rep, work / f"s{rep}"))
                    print(json.dumps(rows[-1]), flush=True)
        else:
            from distill.testing import tiny_model

            model_dir = args.model_dir or tiny_model(work / "tiny")
            with vllm_server(model_dir) as (base_url, model):
                for rep in range(args.repeats):
                    rows.append(one_run(base_url, model, args, args.seed + rep, work / f"s{rep}"))
                    print(json.dumps(rows[-1]), flush=True)

    entry = {
        "commit": measured_commit,
        "teacher_module": str(Path(measured.__file__).resolve()),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "median": median_row(rows),
        "load_average_before": load_before,
        "load_average_after": round(os.getloadavg()[0], 2),
        "runs": rows,
    }
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.update(
        {
            "benchmark": "backoff",
            "what": "OpenAI teacher under 429 Retry-After through tests/servers.py FaultProxy: wall vs ideal schedule",
            "ideal": "(sum of latencies of successful attempts + sum of requested waits) / concurrency",
            "workload": {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "rate_429": args.rate,
                "retry_after_seconds": args.retry_after,
                "stub_latency_seconds": args.latency,
                "max_tokens": args.max_tokens,
                "repeats": args.repeats,
                "seeds": [args.seed + r for r in range(args.repeats)],
            },
            "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        }
    )
    results.setdefault("runs", {}).setdefault(args.label, {})[args.upstream] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({args.label: {args.upstream: entry["median"]}}, indent=2))


if __name__ == "__main__":
    main()
