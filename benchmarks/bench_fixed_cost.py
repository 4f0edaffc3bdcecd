"""Where a small `distill run`'s time goes when the teacher costs nothing: the fixed cost per run.

A 200-request job (seeds -> generate with the `response` task over the openai teacher ->
export with cards, audit and report), run as a fresh process with every answer already in the
request cache, so what is left is distill's own work: interpreter start, imports, config and
plugin discovery, committing shards, the export, its cards and audit, and the report. Each
figure is the median of `--repeats` fresh processes, and the same measurements run for another
checkout with `--src` (e.g. the commit before a change) so before and after sit side by side.

The breakdown times the run's phases in the same processes (each phase function is wrapped
where its caller looks it up): imports before `main`, config, plugin discovery, each stage,
the cards with the release audit, and the report.

    python benchmarks/bench_fixed_cost.py --out benchmarks/results/fixed_cost.json [--src /path/to/old]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generation import write_seeds  # noqa: E402

#: A `distill run` with its phases timed: each function below is wrapped where its caller looks
#: it up, so the same script times this checkout and an older one with the same layout.
RUNNER = """
import json, sys, time
t0 = time.perf_counter()
import distill.cli.app, distill.pipeline, distill.stages.records, distill.stages.runners
app, pipeline, records, runners = (sys.modules[f"distill.{m}"] for m in ("cli.app", "pipeline", "stages.records", "stages.runners"))
t_imported = time.perf_counter()
phases = {}

def timed(name, fn):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - started
    return wrapper

app.load_config = timed("load_config", app.load_config)
app.make_registry = timed("plugin_discovery", app.make_registry)
app.write_report = timed("report", app.write_report)
pipeline.run_seeds = timed("seeds_stage", pipeline.run_seeds)
records.write_cards = timed("cards_and_audit", records.write_cards)
for kind in ("generate", "export"):
    runners.RUNNERS[kind] = timed(kind + "_stage", runners.RUNNERS[kind])
sys.argv = ["distill", "run", sys.argv[1], "--quiet"]
try:
    app.main()
except SystemExit as exc:
    if exc.code:
        raise
t_end = time.perf_counter()
phases["imports"] = t_imported - t0
phases["in_process_total"] = t_end - t0
heavy = ("datasets", "pandas", "matplotlib", "numpy", "pyarrow", "torch", "transformers", "huggingface_hub", "openai")
print(json.dumps({"phases": phases, "heavy": [m for m in heavy if m in sys.modules]}), file=sys.stderr)
"""


class Stub:
    """An OpenAI-compatible endpoint answering at once: fills the cache for the timed runs."""

    def __enter__(self) -> str:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                text = "A short answer of a few words. " * 3
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 15, "total_tokens": 25},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def config(work: Path, out: Path, base_url: str) -> Path:
    path = work / f"{out.name}.json"
    cfg = {
        "output": str(out),
        "seed": 0,
        "seeds": [
            {"path": str(work / "seeds.jsonl"), "name": "bench", "license": "CC0-1.0", "prompt_field": "question"}
        ],
        "cache": {"path": str(work / "requests.sqlite")},
        "release": {"use": "commercial", "what": "data", "name": "bench"},
        "teachers": {
            "t": {
                "plugin": "openai",
                "options": {"base_url": base_url, "model": "m", "license": "Apache-2.0", "concurrency": 8},
            }
        },
        "stages": [
            {"kind": "generate", "name": "answers", "teacher": "t", "task": {"plugin": "response"}},
            {"kind": "export", "name": "sft", "format": "sft"},
        ],
    }
    path.write_text(json.dumps(cfg))
    return path


def env_for(src: Path | None) -> dict[str, str]:
    env = {**os.environ, "NO_COLOR": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def wall(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def timed_run(runner: Path, cfg: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(runner), str(cfg)], env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    return seconds, json.loads(done.stderr.strip().splitlines()[-1])


def measure(label: str, src: Path | None, work: Path, base_url: str, repeats: int) -> dict[str, Any]:
    env = env_for(src)
    runner = work / "runner.py"
    runner.write_text(RUNNER)
    timed_run(runner, config(work, work / f"{label}-fill", base_url), env)  # fills the cache
    interp: list[float] = []
    runs: list[float] = []
    phases: list[dict[str, float]] = []
    heavy: list[str] = []
    for i in range(repeats):
        interp.append(wall([sys.executable, "-c", "pass"], env))
        seconds, seen = timed_run(runner, config(work, work / f"{label}-{i}", base_url), env)
        runs.append(seconds)
        phases.append(seen["phases"])
        heavy = seen["heavy"]
    names = sorted({k for p in phases for k in p})
    breakdown = {k: round(statistics.median(p.get(k, 0.0) for p in phases), 3) for k in names}
    breakdown["interpreter_start_and_exit"] = round(
        statistics.median(r - p["in_process_total"] for r, p in zip(runs, phases)), 3
    )
    return {
        "code": str(src) if src else "installed",
        "cached_run_seconds_median": round(statistics.median(runs), 3),
        "cached_run_seconds": [round(x, 3) for x in runs],
        "bare_interpreter_seconds_median": round(statistics.median(interp), 3),
        "phases_seconds_median": breakdown,
        "heavy_modules_loaded": heavy,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--src", type=Path, help="another checkout's `distill` and `distill_plugins` to measure too")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fixed_cost.json")
    args = ap.parse_args()
    result: dict[str, Any] = {
        "benchmark": "fixed cost of a 200-request distill run, every answer cached",
        "requests": args.requests,
        "repeats": args.repeats,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory() as tmp, Stub() as base_url:
        for label, src in [("after", None), *([("before", args.src)] if args.src else [])]:
            work = Path(tmp) / label
            work.mkdir()
            write_seeds(work / "seeds.jsonl", args.requests)
            result[label] = measure(label, src, work, base_url, args.repeats)
            print(label, json.dumps(result[label]), flush=True)
    if args.src:
        result["cached_run_saved_seconds"] = round(
            result["before"]["cached_run_seconds_median"] - result["after"]["cached_run_seconds_median"], 3
        )
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
