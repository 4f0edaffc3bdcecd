"""One run of each generation-task example on the embedded model (SmolLM2-135M-Instruct), with
what each stage kept and dropped, why, how long it took, and a few of the records it wrote.

The tests run these tasks on the tiny random model, which proves the machinery; this shows
what a real (if small) chat model makes of each method. Outputs go to a scratch folder; the
figures to `benchmarks/results/task_examples.json`.

    python benchmarks/run_task_examples.py [--only magpie structured]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["evol_instruct", "magpie", "multi_turn", "structured", "structured-vllm"]


def sample(record: object) -> dict:
    messages = getattr(record, "messages", [])
    return {"messages": [{"role": m.role, "content": m.content[:300]} for m in messages]}


def run_example(name: str, work: Path) -> dict:
    import distill

    example, _, engine = name.partition("-")
    folder = ROOT / "examples" / example
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["output"] = str(work / name)
    if engine:  # the same config with the teacher on another engine (vllm enforces a schema)
        for teacher in config["teachers"].values():
            teacher["plugin"] = engine
            teacher["options"].pop("batch_size", None)
            teacher["options"]["max_model_len"] = 1024
    started = time.perf_counter()
    run = distill.run(config, base_dir=folder, progress=False, log=lambda m: None)
    seconds = time.perf_counter() - started
    stages = {}
    for stage in run.stage_names():
        reasons: Counter[str] = Counter()
        for record in run.records(stage, "rejected"):
            events = record.provenance.events
            reasons[(events[-1].reason or events[-1].action) if events else "?"] += 1
        kept = list(run.records(stage))
        stages[stage] = {
            **run.counts()[stage],
            "dropped_because": dict(reasons.most_common(6)),
            "samples": [sample(r) for r in kept[:3]],
        }
    where = f"examples/{example}/config.yaml" + (f" with the teacher on {engine}" if engine else "")
    return {"example": where, "seconds": round(seconds, 1), "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=EXAMPLES, choices=EXAMPLES)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/task_examples.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="task-examples-"))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.only:
        results[name] = run_example(name, work)
        counts = {k: (v["kept"], v["rejected"]) for k, v in results[name]["stages"].items()}
        print(name, results[name]["seconds"], "s", counts, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
