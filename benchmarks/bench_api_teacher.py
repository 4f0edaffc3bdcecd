"""distill's OpenAI teacher vs a bare `AsyncOpenAI` loop, against the same local vLLM server
(target: distill's completion tokens/s >= 0.95x the bare loop's, median over repetitions).

Both sides send the same N chat requests (same prompts, seeds and sampling, so the server
does the same work) with the same concurrency: the bare loop is `asyncio.gather` over a
semaphore, the way one would write it by hand. distill's side runs as a pipeline stage runs
it: set up with a state folder (so its spend is persisted after every request), its own
retry loop, rate-limit and budget bookkeeping, and results handed over one by one through
`iter_generate`. Each side builds and closes its client inside the timed region. The sides
alternate, and which goes first alternates too, so a drifting machine does not favour one.

    python benchmarks/bench_api_teacher.py --out benchmarks/results/api_teacher.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the server helper the tests use


def cpu_seconds() -> float:
    """This process's CPU time (all threads): the client's own cost, which on a loaded machine
    is a steadier figure than wall time, and which on a small one the server has to share."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def prompts(n: int) -> list[str]:
    topics = ["routers", "sourdough", "tax forms", "tide pools", "compilers", "violins", "glaciers"]
    return [f"Request {i}: explain one thing about {topics[i % len(topics)]} in two sentences." for i in range(n)]


def run_distill(
    base_url: str, model: str, texts: list[str], args: argparse.Namespace, state: Path
) -> tuple[float, int]:
    from distill.plugin import PluginContext
    from distill.records import Message
    from distill.teacher import ChatRequest
    from distill_plugins.teachers.openai import OpenAITeacher

    requests = [ChatRequest(messages=[Message(role="user", content=t)], seed=i) for i, t in enumerate(texts)]
    started = time.perf_counter()
    teacher = OpenAITeacher(
        model=model,
        base_url=base_url,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        temperature=0.7,
        top_p=0.95,
        timeout=120,
    )
    teacher.setup(PluginContext(base_dir=state or Path("."), progress=False, state_dir=state))
    tokens = 0
    for _, samples in teacher.iter_generate(requests):
        tokens += sum(s.completion_tokens or 0 for s in samples)
    teacher.close()
    return time.perf_counter() - started, tokens


async def _raw(base_url: str, model: str, texts: list[str], args: argparse.Namespace) -> int:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="EMPTY", base_url=base_url, timeout=120)
    sem = asyncio.Semaphore(args.concurrency)

    async def one(i: int, text: str) -> int:
        async with sem:
            resp = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": text}],
                temperature=0.7,
                top_p=0.95,
                max_tokens=args.max_tokens,
                seed=i,
            )
        return resp.usage.completion_tokens

    try:
        return sum(await asyncio.gather(*(one(i, t) for i, t in enumerate(texts))))
    finally:
        await client.close()


def run_raw(base_url: str, model: str, texts: list[str], args: argparse.Namespace) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = asyncio.run(_raw(base_url, model, texts, args))
    return time.perf_counter() - started, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7, help="pairs of runs (the median ratio is reported)")
    ap.add_argument("--model-dir", type=Path, help="a model folder to serve (default: a fresh tiny model)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/api_teacher.json")
    args = ap.parse_args()

    from servers import vllm_server

    from distill.testing import TINY_MODEL_ID, tiny_model

    texts = prompts(args.requests)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = args.model_dir or tiny_model(work / "tiny")
        started = time.perf_counter()
        with vllm_server(model_dir) as (base_url, model):
            startup = time.perf_counter() - started
            print(f"vLLM server ready in {startup:.1f} s at {base_url}", flush=True)
            run_raw(base_url, model, texts, args)  # warm-up, both paths: prefix cache, connections
            run_distill(base_url, model, texts, args, work / "state-warmup")
            rows = []
            for rep in range(args.repeats):
                order = ["distill", "raw"] if rep % 2 == 0 else ["raw", "distill"]
                row: dict[str, float | int | str] = {"first": order[0], "load_average": load_average()}
                for side in order:
                    cpu = cpu_seconds()
                    if side == "distill":
                        wall, tokens = run_distill(base_url, model, texts, args, work / f"state-{rep}")
                    else:
                        wall, tokens = run_raw(base_url, model, texts, args)
                    row[f"{side}_client_cpu_seconds"] = round(cpu_seconds() - cpu, 3)
                    row[f"{side}_seconds"] = round(wall, 3)
                    row[f"{side}_completion_tokens"] = tokens
                    row[f"{side}_tokens_per_s"] = round(tokens / wall, 1)
                row["ratio"] = round(float(row["distill_tokens_per_s"]) / float(row["raw_tokens_per_s"]), 4)
                rows.append(row)
                print(json.dumps(row), flush=True)

    median_ratio = statistics.median(float(r["ratio"]) for r in rows)
    result = {
        "benchmark": "api_teacher",
        "what": "completion tokens/s, distill OpenAITeacher vs bare AsyncOpenAI gather+semaphore, same vLLM server",
        "model": TINY_MODEL_ID if args.model_dir is None else str(args.model_dir),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "server_startup_seconds": round(startup, 1),
        "distill_tokens_per_s_median": statistics.median(float(r["distill_tokens_per_s"]) for r in rows),
        "raw_tokens_per_s_median": statistics.median(float(r["raw_tokens_per_s"]) for r in rows),
        "median_ratio": median_ratio,
        "target_ratio": 0.95,
        "meets_target": median_ratio >= 0.95,
        "distill_client_cpu_seconds_median": statistics.median(float(r["distill_client_cpu_seconds"]) for r in rows),
        "raw_client_cpu_seconds_median": statistics.median(float(r["raw_client_cpu_seconds"]) for r in rows),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "runs": rows,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
