"""Live requests vs the Batch API, through the `openai` teacher, on the same local server and prompts.

One vLLM OpenAI-compatible server (the tiny model, or `--model DIR`) answers everything. The
local batch endpoint (tests/batch_endpoint.py) takes the teacher's batch files and answers
their lines with that same server, so the two modes differ only in how requests travel:
one HTTP request per prompt, or a file upload, a batch, status polls and a download. Each
mode runs `distill.generate` (a real generate stage: request cache, commits, budget) over
the same prompts with the same seed, in a fresh output folder and cache, alternating which
goes first. A third row answers one batch with vLLM's own batch runner
(`vllm.entrypoints.openai.run_batch`), which starts an engine per batch.

Cost is what the teacher's budget computed (its `api-budget.json`), at gpt-4o-mini's list
prices and OpenAI's batch discount (`batch_price_factor: 0.5`). Wall time here is what the
machinery costs locally; a provider's batch takes minutes to hours (its completion window).

    python benchmarks/bench_batch.py --out benchmarks/results/batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the server helpers the tests use

PRICES = {"price_per_1k_prompt": 0.00015, "price_per_1k_completion": 0.0006}  # gpt-4o-mini, USD


def prompts(n: int) -> list[dict[str, str]]:
    topics = ["routers", "sourdough", "tax forms", "tide pools", "compilers", "violins", "glaciers"]
    return [{"prompt": f"Request {i}: explain one thing about {topics[i % 7]} in two sentences."} for i in range(n)]


def one_run(endpoint: Any, model: str, mode: str, rows: list[dict], folder: Path, args: argparse.Namespace) -> dict:
    import distill

    options = {
        "base_url": endpoint.base_url,
        "model": model,
        "license": "Apache-2.0",
        "temperature": 1.0,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "batch": mode != "live",
        "batch_window": 1.0,
        "batch_poll_seconds": 1.0,
        **PRICES,
    }
    before = (endpoint.live_calls, endpoint.uploads, endpoint.created, endpoint.polls)
    started = time.perf_counter()
    data = distill.generate(
        rows,
        teacher={"plugin": "openai", "options": options},
        output=folder,
        cache=folder / "requests.sqlite",
        license="CC0-1.0",
        batch_size=32,
        progress=False,
        log=lambda m: None,
    )
    seconds = time.perf_counter() - started
    after = (endpoint.live_calls, endpoint.uploads, endpoint.created, endpoint.polls)
    live, uploads, batches, polls = (a - b for a, b in zip(after, before))
    (budget_file,) = folder.glob("state/*/api-budget.json")
    budget = json.loads(budget_file.read_text())
    return {
        "mode": mode,
        "seconds": round(seconds, 2),
        "rows": len(data),
        "live_requests": live,
        "file_uploads": uploads,
        "batches": batches,
        "status_polls": polls,
        "requests_answered": budget["requests"],
        "prompt_tokens": budget["prompt_tokens"],
        "completion_tokens": budget["completion_tokens"],
        "cost_usd": budget["cost_usd"],
    }


def summary(runs: list[dict]) -> dict:
    keys = ["seconds", "live_requests", "file_uploads", "batches", "status_polls", "requests_answered"]
    keys += ["prompt_tokens", "completion_tokens", "cost_usd"]
    return {k: statistics.median(r[k] for r in runs) for k in keys} | {"runs": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="prompts per run")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--model", type=Path, help="model folder (default: the tiny test model)")
    parser.add_argument("--no-run-batch", action="store_true", help="skip the vLLM run_batch row")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/batch.json")
    args = parser.parse_args()

    from batch_endpoint import BatchEndpoint, post_chat, server_engine, vllm_engine
    from servers import SERVED_MODEL, vllm_server

    from distill.testing import tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    model_dir = args.model or tiny_model(work / "model")
    rows = prompts(args.n)
    runs: dict[str, list[dict]] = {"live": [], "batch": []}
    with vllm_server(model_dir) as server:
        with BatchEndpoint(server_engine(server.base_url, args.concurrency), live=post_chat(server.base_url)) as ep:
            for rep in range(args.reps):
                order = ["live", "batch"] if rep % 2 == 0 else ["batch", "live"]
                for mode in order:
                    result = one_run(ep, server.model, mode, rows, work / f"{mode}-{rep}", args)
                    print(json.dumps(result), flush=True)
                    runs[mode].append(result)
        if not args.no_run_batch:  # lines its batch fails are retried live, on the same server
            runs["batch (vLLM run_batch)"] = []
            engine = vllm_engine(model_dir, SERVED_MODEL, work / "run_batch.log")
            with BatchEndpoint(engine, live=post_chat(server.base_url)) as ep:
                result = one_run(ep, server.model, "batch (vLLM run_batch)", rows, work / "run-batch", args)
                print(json.dumps(result), flush=True)
                runs["batch (vLLM run_batch)"].append(result)

    medians = {mode: summary(r) for mode, r in runs.items()}
    live = medians["live"]
    report = {
        "what": "distill.generate with the openai teacher, live vs batch mode, same local vLLM server and prompts",
        "prompts": args.n,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "prices_usd_per_1k": PRICES,
        "batch_price_factor": 0.5,
        "cpus": os.cpu_count(),
        "medians": medians,
        "batch_vs_live": {
            mode: {
                "seconds_ratio": round(m["seconds"] / live["seconds"], 3),
                "cost_ratio": round(m["cost_usd"] / live["cost_usd"], 3) if live["cost_usd"] else None,
            }
            for mode, m in medians.items()
            if mode != "live"
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"medians": medians, "batch_vs_live": report["batch_vs_live"]}, indent=1))


if __name__ == "__main__":
    main()
