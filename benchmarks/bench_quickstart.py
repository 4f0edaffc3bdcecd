"""The quickstart's figures: wall time of `distill run examples/quickstart/config.yaml` from an
empty output with a cold request cache (the embedded model already converted, as after
installation), and the held-out scores of the base model, the teacher as it wrote the data
(system prompt and prefix), the teacher's best of 4 by the rubric (a ranker at inference time)
and the student.

Targets (issues 7 and 19): student rubric >= 0.8 without the system prompt, base <= 0.2, student
above the teacher as it wrote the data, the whole run within 10 minutes on 2 quiet cores.

    python benchmarks/bench_quickstart.py --out benchmarks/results/quickstart.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quickstart.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "quickstart"
        shutil.copytree(ROOT / "examples" / "quickstart", work, ignore=shutil.ignore_patterns("out"))
        with open(work / "config.yaml", "a") as f:
            f.write("\ncache: {path: requests.sqlite}\n")  # cold: nothing answered before
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "distill.cli", "run", str(work / "config.yaml"), "--quiet"],
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - started
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        ev = json.loads((work / "out" / "eval" / "eval" / "eval.json").read_text())
        stages = {}
        for m in sorted((work / "out" / "stages").glob("*/manifest.json")):
            data = json.loads(m.read_text())
            stages[m.parent.name] = {**data["stats"]["totals"], "reasons": data["stats"]["reasons"]}
    scores = {m["name"]: {k: round(v, 4) for k, v in m["scores"].items()} for m in ev["metrics"]}
    rubric = scores["rubric"]
    result = {
        "benchmark": "quickstart",
        "what": "distill run examples/quickstart/config.yaml, empty output, cold request cache",
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count()},
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "wall_seconds": round(seconds, 1),
        "target_seconds": 600,
        "held_out_items": len(ev["items"]),
        "scores": scores,
        "stages": stages,
        "meets_targets": bool(
            rubric["student"] >= 0.8
            and rubric["base"] <= 0.2
            and rubric["student"] > rubric["teacher"]
            and seconds <= 600
        ),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_seconds", "scores", "meets_targets")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
