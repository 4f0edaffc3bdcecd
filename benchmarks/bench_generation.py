"""Generation throughput as whole commands: `distill run` vs a bare continuous `AsyncOpenAI` loop.

Targets (issue 18): on a workload whose answers take very different times, `distill run`'s
throughput is >= 0.95x the bare loop's (median of alternating pairs), and a 200-request run's
fixed overhead over the bare loop is <= 1.5 s.

Both sides are fresh processes (interpreter start and imports count), ask the same local vLLM
server (a tiny model, started once) the same 200 chat requests with the same concurrency, and
write what they got to disk. Between them and the server sits a proxy that holds each answer
for a seeded time drawn per prompt, as if its answer were 4 to 256 tokens long at a steady
decoding speed: so both sides see exactly the same latency for the same request, and a runner
that waits for the slowest request of each batch pays for it. A tiny model on CPU answers
every request at about the same speed whatever it is asked, which would hide that.

distill's side is what a user runs: seeds -> generate (the `response` task over the openai
teacher) -> export with cards and the release audit, with a fresh output folder and request
cache each time. The bare side is `asyncio.gather` over a semaphore, the way one writes it by
hand, which keeps `concurrency` requests in flight until the last one. Pairs alternate which
side goes first. The fixed overhead is measured the same way on the same requests with the
proxy adding no delay (`--fixed` pairs), where there is nothing to overlap.

    python benchmarks/bench_generation.py --out benchmarks/results/generation.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the vLLM server helper the tests use

TOPICS = ["routers", "sourdough", "tax forms", "tide pools", "compilers", "violins", "glaciers", "bees"]


class LatencyProxy:
    """Forwards to the server, then holds each answer for a time seeded by its prompt.

    The simulated length is log-uniform between `min_tokens` and `max_tokens` (short answers
    are as common as long ones in each factor of two), at `seconds_per_token`."""

    def __init__(self, upstream: str, *, seconds_per_token: float, min_tokens: int, max_tokens: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.seconds_per_token = seconds_per_token
        self.min_tokens, self.max_tokens = min_tokens, max_tokens
        self.server: ThreadingHTTPServer | None = None

    def delay(self, body: bytes) -> float:
        if self.seconds_per_token <= 0:
            return 0.0
        messages = json.loads(body).get("messages", [])
        key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
        rng = random.Random(int.from_bytes(key[:8], "big"))
        tokens = math.exp(rng.uniform(math.log(self.min_tokens), math.log(self.max_tokens)))
        return tokens * self.seconds_per_token

    def __enter__(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                started = time.monotonic()
                req = urllib.request.Request(
                    proxy.upstream + self.path.removeprefix("/v1"),
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=300) as resp:
                    data, status = resp.read(), resp.status
                time.sleep(max(0.0, proxy.delay(body) - (time.monotonic() - started)))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def write_seeds(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            q = f"Question {i}: tell me something about {TOPICS[i % len(TOPICS)]}, as briefly or fully as it needs."
            fh.write(json.dumps({"question": q}) + "\n")


def write_config(path: Path, seeds: Path, out: Path, base_url: str, model: str, args: argparse.Namespace) -> None:
    config = {
        "output": str(out),
        "seed": 0,
        "seeds": [{"path": str(seeds), "name": "bench", "license": "CC0-1.0", "prompt_field": "question"}],
        "cache": {"path": str(out) + ".requests.sqlite"},
        "release": {"use": "commercial", "what": "data", "name": "bench"},
        "teachers": {
            "t": {
                "plugin": "openai",
                "options": {
                    "base_url": base_url,
                    "model": model,
                    "license": "Apache-2.0",
                    "concurrency": args.concurrency,
                    "max_tokens": args.max_tokens,
                    "temperature": 0.7,
                    "top_p": 0.95,
                    "timeout": 300,
                },
            }
        },
        "stages": [
            {"kind": "generate", "name": "answers", "teacher": "t", "task": {"plugin": "response"}},
            {"kind": "export", "name": "sft", "format": "sft"},
        ],
    }
    path.write_text(json.dumps(config, indent=1))


def bare_loop(seeds: Path, out: Path, base_url: str, model: str, concurrency: int, max_tokens: int) -> None:
    """The hand-written baseline, run in a fresh process: every request through one semaphore."""
    import asyncio

    from openai import AsyncOpenAI

    questions = [json.loads(line)["question"] for line in seeds.read_text().splitlines()]

    async def main() -> list[dict[str, Any]]:
        client = AsyncOpenAI(api_key="EMPTY", base_url=base_url, timeout=300, max_retries=0)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int, q: str) -> dict[str, Any]:
            async with sem:
                resp = await client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": q}],
                    temperature=0.7,
                    top_p=0.95,
                    max_tokens=max_tokens,
                    seed=i,
                )
            return {"question": q, "answer": resp.choices[0].message.content}

        try:
            return await asyncio.gather(*(one(i, q) for i, q in enumerate(questions)))
        finally:
            await client.close()

    rows = asyncio.run(main())
    with out.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and the CPU seconds the command used (user + system, its children included):
    on a machine the server shares, CPU a client spends is CPU the server does not get."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def pairs(
    label: str, n: int, work: Path, seeds: Path, base_url: str, model: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    env = {**os.environ, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("VIRTUAL_ENV", None)
    if args.src:
        env["PYTHONPATH"] = str(args.src)
    rows = []
    for rep in range(n):
        order = ["distill", "bare"] if rep % 2 == 0 else ["bare", "distill"]
        row: dict[str, Any] = {"first": order[0], "load_average": round(os.getloadavg()[0], 2)}
        for side in order:
            out = work / f"{label}-{side}-{rep}"
            if side == "distill":
                cfg = work / f"{label}-{rep}.yaml"
                write_config(cfg, seeds, out, base_url, model, args)
                cmd = [str(Path(sys.executable).parent / "distill"), "run", str(cfg), "--quiet"]
                if args.src:  # another checkout's code (e.g. the commit before a change), same venv
                    cmd = [sys.executable, "-c", "import sys; from distill.cli.app import main; sys.exit(main())"]
                    cmd += ["run", str(cfg), "--quiet"]
            else:
                cmd = [sys.executable, __file__, "--bare", str(seeds), str(out), base_url, model]
                cmd += ["--concurrency", str(args.concurrency), "--max-tokens", str(args.max_tokens)]
            wall, cpu = timed(cmd, env)
            row[f"{side}_seconds"], row[f"{side}_cpu_seconds"] = round(wall, 3), round(cpu, 3)
        row["ratio"] = round(row["bare_seconds"] / row["distill_seconds"], 4)  # throughput ratio
        row["overhead_seconds"] = round(row["distill_seconds"] - row["bare_seconds"], 3)
        print(label, json.dumps(row), flush=True)
        rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "distill_seconds_median": statistics.median(r["distill_seconds"] for r in rows),
        "bare_seconds_median": statistics.median(r["bare_seconds"] for r in rows),
        "throughput_ratio_median": statistics.median(r["ratio"] for r in rows),
        "overhead_seconds_median": statistics.median(r["overhead_seconds"] for r in rows),
        "distill_cpu_seconds_median": statistics.median(r["distill_cpu_seconds"] for r in rows),
        "bare_cpu_seconds_median": statistics.median(r["bare_cpu_seconds"] for r in rows),
        "runs": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bare", nargs=4, metavar=("SEEDS", "OUT", "BASE_URL", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16, help="real tokens the tiny model writes per answer")
    ap.add_argument("--seconds-per-token", type=float, default=0.01, help="simulated decoding speed")
    ap.add_argument("--pairs", type=int, default=5, help="alternating pairs on the varied-latency workload")
    ap.add_argument("--fixed", type=int, default=5, help="alternating pairs with no added latency")
    ap.add_argument(
        "--src",
        type=Path,
        help="a folder holding `distill` and `distill_plugins` to run instead of the installed ones",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/generation.json")
    args = ap.parse_args()
    if args.bare:
        seeds, out, base_url, model = args.bare
        bare_loop(Path(seeds), Path(out), base_url, model, args.concurrency, args.max_tokens)
        return

    from servers import vllm_server

    from distill.testing import TINY_MODEL_ID, tiny_model

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seeds = work / "seeds.jsonl"
        write_seeds(seeds, args.requests)
        with vllm_server(tiny_model(work / "tiny")) as (base_url, model):
            varied = LatencyProxy(base_url, seconds_per_token=args.seconds_per_token, min_tokens=4, max_tokens=256)
            delays = [
                varied.delay(
                    json.dumps({"messages": [{"role": "user", "content": json.loads(line)["question"]}]}).encode()
                )
                for line in seeds.read_text().splitlines()
            ]
            with varied as url:
                pairs("warmup", 1, work, seeds, url, model, args)
                varied_rows = pairs("varied", args.pairs, work, seeds, url, model, args)
            with LatencyProxy(base_url, seconds_per_token=0, min_tokens=1, max_tokens=1) as url:
                fixed_rows = pairs("fixed", args.fixed, work, seeds, url, model, args)
    result = {
        "benchmark": "generation throughput as whole commands",
        "what": "distill run (seeds -> generate -> export) vs bare AsyncOpenAI gather+semaphore, fresh processes",
        "model": TINY_MODEL_ID,
        "distill_code": str(args.src) if args.src else "installed",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "simulated_latency": {
            "tokens": "log-uniform 4..256 per prompt (seeded by the prompt)",
            "seconds_per_token": args.seconds_per_token,
            "sum_seconds": round(sum(delays), 2),
            "ideal_seconds_at_concurrency": round(sum(delays) / args.concurrency, 2),
            "max_seconds": round(max(delays), 2),
        },
        "varied": summary(varied_rows),
        "fixed": summary(fixed_rows),
        "targets": {"throughput_ratio": ">= 0.95", "fixed_overhead_seconds": "<= 1.5"},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    result["meets_targets"] = (
        result["varied"]["throughput_ratio_median"] >= 0.95 and result["fixed"]["overhead_seconds_median"] <= 1.5
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("varied", "fixed")}, indent=2))
    for k in ("varied", "fixed"):
        print(k, json.dumps({m: v for m, v in result[k].items() if m != "runs"}))


if __name__ == "__main__":
    main()
