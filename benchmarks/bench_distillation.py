"""What the generated data adds: the quickstart task's student trained four ways, three run seeds each.

Arms, all from `examples/quickstart/synthetic.yaml` (the same teachers, filters, held-out set
and evaluation; (a)-(c) train with the same SFT settings, (b) and (c) then with the same DPO step):

- (a) `seed-answers`: the 70 seed questions with their human-written answers, nothing generated
  (SFT only: without ranked candidates there are no preference pairs for the DPO step);
- (b) `generated`: no human-written answer reaches training: seed and self-instruct questions,
  off-topic ones answered by the rule-answer filter, the rest by the teacher (best of 4 by the
  rubric, passing answers only): `synthetic.yaml` as shipped;
- (c) `both`: (b) with the seed answers kept where the seeds have them;
- (d) `context-distillation`: (b)'s prompts, trained on-policy by the `context-distillation`
  trainer: the same model with the system prompt and prefix is the teacher, at the logit level.

Every run is a whole `distill run` in a fresh process. A run seed's arms share one request
cache (an identical teacher request is paid once: (b), (c) and (d) of one seed share their
generation); with `--jobs`, seeds run side by side, each with its own cache. Each run's
held-out rubric is read from its `eval.json`, with the teacher as it wrote the data (system
prompt and prefix) and the untrained base beside it. The results go to `--out` and, as the
table "what the generated data added", into every run's `ablation.json` and report page.

    python benchmarks/bench_distillation.py --work /tmp/distill-ablation \
        --out benchmarks/results/distillation.json [--seeds 0 1 2] [--arms a b c d]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "quickstart"

ARMS = {
    "a": ("seed-answers", "the seed questions with their human-written answers, nothing generated"),
    "b": ("generated", "no human-written answer: teacher answers (best of 4 by the rubric) and rule redirects"),
    "c": ("both", "(b) with the seed answers kept where the seeds have them"),
    "d": ("context-distillation", "(b)'s prompts; the prompted teacher's logits on the student's own samples"),
}


def arm_config(arm: str, seed: int, cache: Path) -> dict[str, Any]:
    cfg = yaml.safe_load((EXAMPLE / "synthetic.yaml").read_text())
    cfg.update(output="out", seed=seed, cache={"path": str(cache)})
    stages = {s["name"]: s for s in cfg["stages"]}
    if arm in ("a", "c"):
        del cfg["seeds"][0]["prompts_only"]
        cfg["seeds"][0]["response_field"] = "answer"
    if arm == "a":  # nothing generated, nothing ranked: no preference pairs, so SFT alone
        cfg["stages"] = [stages[n] for n in ("sft", "student", "eval")]
        stages["student"]["steps"] = [s for s in stages["student"]["steps"] if s["trainer"] == "sft"]
    if arm == "c":
        stages["redirects"]["filters"][0]["options"]["replace"] = False
    if arm == "d":
        answers = stages["answers"]["task"]["options"]
        stages["student"]["steps"] = [
            {
                "trainer": "context-distillation",
                "data": "sft",  # the trainer reads the prompts; (b)'s answers are not used
                "options": {
                    "system_prompt": answers["system_prompt"],
                    "prefix": answers["prefix"],
                    "max_steps": 40,
                    "batch_size": 8,
                    "learning_rate": 5.0e-4,
                    "max_completion_length": 48,
                    "beta": 0.5,
                    "lora": {"r": 16},
                    "logging_steps": 5,
                },
            }
        ]
    return cfg


def training_rows(out: Path) -> dict[str, int]:
    """Who wrote the answers the student trained on (for (d): the prompts it sampled on)."""
    from distill.io.store import read_shards

    folder = out / "stages" / "sft"
    manifest = json.loads((folder / "manifest.json").read_text())
    counts = {"human": 0, "teacher": 0, "rule": 0}
    for r in read_shards(folder, [s["kept_file"] for s in manifest["shards"]]):
        if "answered_by" in r.metadata:
            counts["rule"] += 1
        elif "finish_reason" in r.metadata:
            counts["teacher"] += 1
        else:
            counts["human"] += 1
    return counts


def run_arm(work: Path, arm: str, seed: int, cache: Path, threads: int | None) -> dict[str, Any]:
    folder = work / f"{arm}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("seeds.jsonl", "heldout.jsonl", "acme_rubric.py"):
        shutil.copy(EXAMPLE / name, folder / name)
    (folder / "config.yaml").write_text(yaml.safe_dump(arm_config(arm, seed, cache), sort_keys=False))
    started = time.monotonic()
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    done = subprocess.run(
        [sys.executable, "-m", "distill.cli", "run", str(folder / "config.yaml"), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"arm {arm} seed {seed} failed:\n{done.stderr[-3000:]}")
    rows = training_rows(folder / "out")
    if arm in ("b", "d") and rows["human"]:
        raise SystemExit(f"arm {arm} seed {seed}: {rows['human']} human-written answers reached training")
    ev = json.loads((folder / "out" / "eval" / "eval" / "eval.json").read_text())
    rubric = next(m["scores"] for m in ev["metrics"] if m["name"] == "rubric")
    by_topic: dict[str, list[float]] = {}
    for it in ev["items"]:
        by_topic.setdefault(it["tags"].get("topic", "?"), []).append(it["scores"]["rubric"]["student"])
    return {
        "arm": arm,
        "seed": seed,
        "seconds": round(seconds, 1),
        "rubric": {k: round(v, 4) for k, v in rubric.items()},
        "student_by_topic": {k: round(statistics.fmean(v), 4) for k, v in sorted(by_topic.items())},
        "training_rows": rows,
        "out": str(folder / "out"),
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for arm, (name, what) in ARMS.items():
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        student = [r["rubric"]["student"] for r in mine]
        teacher = [r["rubric"]["teacher"] for r in mine]
        table.append(
            {
                "arm": f"({arm}) {name}",
                "what": what,
                "seeds": [r["seed"] for r in mine],
                "student_mean": round(statistics.fmean(student), 4),
                "student_min": min(student),
                "student_max": max(student),
                "student_stdev": round(statistics.stdev(student), 4) if len(student) > 1 else 0.0,
                "teacher_as_it_wrote_the_data_mean": round(statistics.fmean(teacher), 4),
                "base_mean": round(statistics.fmean(r["rubric"]["base"] for r in mine), 4),
                "training_rows_mean": {
                    k: round(statistics.fmean(r["training_rows"][k] for r in mine), 1)
                    for k in ("human", "teacher", "rule")
                },
                "seconds_median": round(statistics.median(r["seconds"] for r in mine), 1),
            }
        )
    return table


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/distill-ablation"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distillation.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run seeds side by side, each with cpus/jobs torch threads (small models use many cores poorly)",
    )
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // a.jobs) if a.jobs > 1 else None

    runs: list[dict[str, Any]] = []
    lock = threading.Lock()

    def write(final: bool) -> dict[str, Any]:
        # Rewritten after every run, so a benchmark cut short still leaves what it measured.
        result = {
            "benchmark": "distillation ablation",
            "what": "examples/quickstart/synthetic.yaml trained four ways; held-out rubric (40 items, half off-topic)",
            "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "jobs": a.jobs, "threads_per_run": threads},
            "complete": final,
            "arms": summarise(sorted(runs, key=lambda r: (r["arm"], r["seed"]))),
            "runs": [
                {k: v for k, v in r.items() if k != "out"} for r in sorted(runs, key=lambda r: (r["seed"], r["arm"]))
            ],
        }
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1) + "\n")
        return result

    def one_seed(seed: int) -> None:
        # A seed's arms in a row, with the seed's own request cache: (b), (c) and (d) reuse its
        # generation; seeds never share a request, so their caches need not be shared either.
        cache = (a.work / f"requests-seed{seed}.sqlite").resolve()
        for arm in a.arms:
            run = run_arm(a.work.resolve(), arm, seed, cache, threads)
            with lock:
                runs.append(run)
                write(final=False)
            print(json.dumps({k: run[k] for k in ("arm", "seed", "seconds", "rubric", "training_rows")}), flush=True)

    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        list(pool.map(one_seed, a.seeds))
    result = write(final=True)
    for r in runs:  # every run's report shows the whole table
        out = Path(r["out"])
        (out / "ablation.json").write_text(
            json.dumps({**result, "this_run": {"arm": r["arm"], "seed": r["seed"]}}, indent=1)
        )
        subprocess.run([sys.executable, "-m", "distill.cli", "report", str(out)], check=True, capture_output=True)
    print(json.dumps(result["arms"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
