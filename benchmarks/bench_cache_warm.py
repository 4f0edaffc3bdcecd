"""Warm re-run of a 500-request generate stage vs its cold run (target: <= 5% of the cold wall
time, zero teacher calls).

The stage is redone by changing its batch size: its output is recomputed, but every request
is the same, so the request cache answers all of them. Both runs go through the real
pipeline with the transformers teacher on a tiny local model (real tokenizer, real generate).

    python benchmarks/bench_cache_warm.py --out benchmarks/results/cache_warm.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from distill.config.loader import load_config
from distill.pipeline import Pipeline
from distill.registry import make_registry
from distill.testing import tiny_model


def run(config: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    result = Pipeline(load_config(config), make_registry(), progress=False, log=lambda m: None).run()
    wall = time.perf_counter() - started
    stage = next(s for s in result.stages if s.stage == "answers")
    manifest = json.loads((config.parent / "out/stages/answers/manifest.json").read_text())
    return wall, {"stage_seconds": stage.seconds, **manifest["stats"]["calls"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="warm re-runs (the median is reported)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cache_warm.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = tiny_model(work / "tiny")
        with open(work / "seeds.jsonl", "w") as f:
            for i in range(args.requests):
                f.write(
                    json.dumps({"prompt": f"Request {i}: how do I configure feature {i % 37} of my router?"}) + "\n"
                )
        cfg = {
            "output": "out",
            "cache": {"path": "requests.sqlite"},
            "seeds": [{"path": "seeds.jsonl", "license": "CC0-1.0"}],
            "teachers": {
                "tiny": {
                    "plugin": "transformers",
                    "options": {"model": str(model), "max_tokens": args.max_tokens, "batch_size": 32},
                }
            },
            "stages": [
                {
                    "kind": "generate",
                    "name": "answers",
                    "teacher": "tiny",
                    "batch_size": 50,
                    "task": {"plugin": "response"},
                }
            ],
        }
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump(cfg))
        cold_wall, cold = run(config)
        warm = []
        for i in range(args.repeats):
            cfg["stages"][0]["batch_size"] = 60 + i  # redo the stage; the requests stay the same
            config.write_text(yaml.safe_dump(cfg))
            warm.append(run(config))
    warm_stage = statistics.median(w["stage_seconds"] for _, w in warm)
    figures = {
        "benchmark": "warm re-run of a generate stage vs cold",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "cold": {
            "stage_seconds": round(cold["stage_seconds"], 3),
            "run_seconds": round(cold_wall, 3),
            "teacher_calls": cold["teacher_calls"],
            "cache_hits": cold["cache_hits"],
        },
        "warm": [
            {
                "stage_seconds": round(w["stage_seconds"], 3),
                "run_seconds": round(wall, 3),
                "teacher_calls": w["teacher_calls"],
                "cache_hits": w["cache_hits"],
            }
            for wall, w in warm
        ],
        "warm_over_cold_stage_time_median": round(warm_stage / cold["stage_seconds"], 4),
        "target": "<= 0.05 and zero teacher calls",
    }
    figures["met"] = figures["warm_over_cold_stage_time_median"] <= 0.05 and all(
        w["teacher_calls"] == 0 for _, w in warm
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
