"""Trained tokens/s of distill's SFT trainer vs bare TRL SFTTrainer with identical settings
(target: ratio >= 0.95), and TRL with its own defaults, to show what choosing precision and
gradient checkpointing from the machine is worth.

Model: SmolLM2-135M-Instruct (the embedded model), LoRA r=16 on all linear layers,
completion-only loss, batch 4, max length 256, on an `sft` export of synthetic conversations.
- distill: `train_chain` with the `sft` plugin (reads the export from disk, plans the hardware,
  writes lineage and card).
- bare TRL: `SFTTrainer` given exactly distill's settings (the same precision, checkpointing,
  LoRA, data in TRL's prompt/completion format), in the same process, order alternating.
- TRL defaults: `SFTConfig` with only what the run needs (steps, batch, lr, length, and
  `use_cpu=True` on a CPU, without which TRL refuses to start there); TRL then picks bf16 and
  gradient checkpointing. Same steps in the native arm; fewer (`--default-steps`) in the avx2
  arm, where each step takes over half a minute.

Two arms, each in its own process: `native` (this CPU as it is) and `avx2` (torch, oneDNN and
MKL capped to AVX2 through their environment variables: a CPU without bf16 instructions, like
the machines in ../shared/ENVIRONMENT.md). Tokens/s is TRL's own count of the tokens it trained
on (`num_tokens`) over the trainer's `train_runtime`, median over repeats. The "best" figures
take each step (2..N; the same batches in every run) at its fastest over the repeats, timed by
a callback both sides get: on a machine shared with other jobs, a neighbour's burst slows a
step several-fold, and the median of a few whole runs still moves with it.

    python benchmarks/bench_sft.py --out benchmarks/results/sft.json
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
import tempfile
import time
from pathlib import Path

WORDS = (
    "river mountain signal kernel harbor lantern orbit meadow engine prism violet cedar "
    "falcon quartz ember canyon glacier beacon tunnel marble"
).split()


def make_export(path: Path, rows: int) -> None:
    from distill.io.export import export_records
    from distill.testing import make_record

    records = []
    for i in range(rows):
        a, b, c = WORDS[i % 20], WORDS[(i * 7) % 20], WORDS[(i * 13) % 20]
        prompt = f"In two or three sentences, explain how a {a} relates to a {b} and why a {c} matters."
        answer = (
            f"A {a} and a {b} are linked because each shapes how the other behaves over time. "
            f"When the {a} changes, the {b} adapts, and the {c} matters because it keeps that "
            f"exchange stable. Example {i}: picture the {a} feeding the {b} while the {c} sets the pace."
        )
        records.append(make_record(prompt, answer, row=i))
    export_records(records, "sft", path)


def tokens_per_s(log: list[dict], runtime: float) -> tuple[int, float]:
    tokens = int(max(h["num_tokens"] for h in log if "num_tokens" in h))
    return tokens, tokens / runtime


STEP_TIMES: list[float] = []


def install_step_timer() -> None:
    """Time every optimizer step of every Trainer in this process (distill's and bare TRL's alike):
    a callback added to transformers' default callbacks."""
    import transformers.trainer as hf
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            STEP_TIMES.append(time.perf_counter() - self.t)

    hf.DEFAULT_CALLBACKS = [*hf.DEFAULT_CALLBACKS, StepTimer]


def step_tokens(log: list[dict]) -> list[int]:
    totals = [int(h["num_tokens"]) for h in log if "num_tokens" in h and "loss" in h]
    return [b - a for a, b in zip([0, *totals], totals)]


def best_tokens_per_s(runs: list[dict]) -> float:
    """Per step (2..N), the fastest of the repeats (the same batches every repeat), summed:
    the speed of the code itself, which a neighbour's burst on a shared machine cannot fake."""
    steps = list(zip(*(r["step_seconds"] for r in runs)))[1:]
    tokens = runs[0]["step_tokens"][1:]
    return sum(tokens) / sum(min(times) for times in steps)


def run_distill(model: Path, data: Path, work: Path, a) -> dict:
    from distill.plugin import PluginContext
    from distill.trainer import DatasetRef, TrainStep
    from distill.training.chain import train_chain
    from distill_plugins.trainers import SFTTrainer

    out = work / f"distill-{time.monotonic_ns()}"
    trainer = SFTTrainer(
        max_steps=a.steps,
        batch_size=a.batch,
        learning_rate=a.lr,
        max_length=a.max_length,
        logging_steps=1,
        save_steps=50,
        lora={"r": 16, "alpha": 32},
    )
    STEP_TIMES.clear()
    started = time.perf_counter()
    (result,) = train_chain(
        [TrainStep(trainer, [DatasetRef(data)], "sft")], str(model), out, PluginContext(base_dir=work, progress=False)
    )
    wall = time.perf_counter() - started
    log = json.loads((result.model_path / "training_log.json").read_text())
    marker = json.loads((result.model_path / "distill-model.json").read_text())
    tokens, tps = tokens_per_s(log, result.metrics["train_runtime"])
    shutil.rmtree(out, ignore_errors=True)
    return {
        "tokens": tokens,
        "train_runtime": result.metrics["train_runtime"],
        "tokens_per_s": tps,
        "step_seconds": [round(t, 4) for t in STEP_TIMES],
        "step_tokens": step_tokens(log),
        "wall_seconds": wall,
        "precision": marker["hardware"]["precision"],
        "gradient_checkpointing": marker["hardware"]["gradient_checkpointing"],
    }


def run_trl(model: Path, data: Path, work: Path, a, *, defaults: bool) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback

    from distill.trainer import import_trl
    from distill_plugins.trainers._common import to_prompt_completion

    SFTConfig, SFTTrainer = import_trl("SFTConfig"), import_trl("SFTTrainer")
    ds = to_prompt_completion(
        datasets.load_from_disk(str(data), keep_in_memory=True).select_columns(["messages"]), "sft", str(data)
    )
    out = work / f"trl-{time.monotonic_ns()}"
    needed = {
        "output_dir": str(out),
        "max_steps": a.default_steps if defaults else a.steps,
        "per_device_train_batch_size": a.batch,
        "learning_rate": a.lr,
        "max_length": a.max_length,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
    }
    if defaults:
        import torch

        config = SFTConfig(**needed, **({} if torch.cuda.is_available() else {"use_cpu": True}))
    else:  # exactly what distill's sft trainer sets on this machine
        from distill.training.hardware import estimate_params, plan_hardware

        plan = plan_hardware(params=estimate_params(model), adapter=True)
        # Under an adapter distill loads the frozen base in the chosen half precision, if any.
        half = {"bf16": "bfloat16", "fp16": "float16"}.get(plan.precision, "float32")
        config = SFTConfig(
            **needed,
            num_train_epochs=1.0,
            gradient_accumulation_steps=1,
            seed=0,
            save_strategy="steps",
            save_steps=50,
            save_total_limit=2,
            packing=False,
            completion_only_loss=True,
            model_init_kwargs={"dtype": half},
            **plan.trl_args(),
        )
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    STEP_TIMES.clear()
    started = time.perf_counter()
    trainer = SFTTrainer(model=str(model), args=config, train_dataset=ds, peft_config=peft)
    trainer.remove_callback(PrinterCallback)
    output = trainer.train()
    trainer.save_model(str(out))
    wall = time.perf_counter() - started
    tokens, tps = tokens_per_s(trainer.state.log_history, output.metrics["train_runtime"])
    shutil.rmtree(out, ignore_errors=True)
    return {
        "tokens": tokens,
        "train_runtime": output.metrics["train_runtime"],
        "tokens_per_s": tps,
        "step_seconds": [round(t, 4) for t in STEP_TIMES],
        "step_tokens": step_tokens(trainer.state.log_history),
        "wall_seconds": wall,
        "precision": "bf16" if config.bf16 else ("fp16" if config.fp16 else "fp32"),
        "gradient_checkpointing": config.gradient_checkpointing,
    }


AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def worker(a) -> dict:
    """One arm, in its own process (so an ISA cap in the environment applies from the start)."""
    from distill.models.embedded import ensure_converted
    from distill.training.hardware import plan_hardware

    model = ensure_converted(progress=False)
    install_step_timer()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_export(work / "sft", a.rows)
        for r in range(a.repeats):
            order = ("distill", "trl") if r % 2 == 0 else ("trl", "distill")
            pair = {"first": order[0], "load_average": round(os.getloadavg()[0], 2)}
            for side in order:
                pair[side] = (
                    run_distill(model, work / "sft", work, a)
                    if side == "distill"
                    else run_trl(model, work / "sft", work, a, defaults=False)
                )
            pair["ratio"] = pair["distill"]["tokens_per_s"] / pair["trl"]["tokens_per_s"]
            if r < a.default_repeats:
                pair["trl_defaults"] = run_trl(model, work / "sft", work, a, defaults=True)
            print(json.dumps(pair), flush=True)
            runs.append(pair)
    defaults = [p["trl_defaults"] for p in runs if "trl_defaults" in p]

    def median(side: str, key: str) -> float:
        return statistics.median(p[side][key] for p in runs)

    best = {side: best_tokens_per_s([p[side] for p in runs]) for side in ("distill", "trl")}

    return {
        "plan": list(plan_hardware(params=135_000_000, adapter=True).reasons),
        "distill_tokens_per_s_median": round(median("distill", "tokens_per_s"), 1),
        "trl_tokens_per_s_median": round(median("trl", "tokens_per_s"), 1),
        "median_ratio": round(statistics.median(p["ratio"] for p in runs), 4),
        "distill_best_tokens_per_s": round(best["distill"], 1),
        "trl_best_tokens_per_s": round(best["trl"], 1),
        "best_ratio": round(best["distill"] / best["trl"], 4),
        "trl_defaults_steps": a.default_steps,
        "trl_defaults_repeats": len(defaults),
        "trl_defaults_precision": defaults[0]["precision"],
        "trl_defaults_gradient_checkpointing": defaults[0]["gradient_checkpointing"],
        "trl_defaults_tokens_per_s_median": round(statistics.median(d["tokens_per_s"] for d in defaults), 2),
        "trl_defaults_best_tokens_per_s": round(best_tokens_per_s(defaults), 2),
        "hardware_defaults_speedup": round(
            median("distill", "tokens_per_s") / statistics.median(d["tokens_per_s"] for d in defaults), 2
        ),
        "hardware_defaults_best_speedup": round(best["distill"] / best_tokens_per_s(defaults), 2),
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument(
        "--default-steps",
        type=int,
        default=2,
        help="steps of the TRL-defaults run in the avx2 arm (slow there); the native arm runs --steps",
    )
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument(
        "--avx2-repeats",
        type=int,
        default=1,
        help="repeats of the arm with torch capped to AVX2 (a CPU without bf16 instructions); 0 skips it",
    )
    ap.add_argument("--default-repeats", type=int, default=3, help="repeats of the TRL-defaults run per arm")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sft.json"))
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a)), flush=True)
        return

    from distill.models.embedded import EMBEDDED_MODEL_ID, ensure_converted

    ensure_converted(progress=False)
    arms = {}
    load_before = os.getloadavg()[0]
    for arm, env, repeats, default_steps in (
        ("native", {}, a.repeats, a.steps),
        ("avx2", AVX2_ENV, a.avx2_repeats, a.default_steps),
    ):
        if repeats == 0:
            continue
        argv = [
            sys.executable,
            __file__,
            "--worker",
            "--steps",
            str(a.steps),
            "--default-steps",
            str(default_steps),
            "--default-repeats",
            str(min(repeats, a.default_repeats)),
            "--batch",
            str(a.batch),
            "--max-length",
            str(a.max_length),
            "--lr",
            str(a.lr),
            "--rows",
            str(a.rows),
            "--repeats",
            str(repeats),
        ]
        proc = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{arm} arm failed:\n{proc.stderr[-3000:]}")
        arms[arm] = {"env": env, "repeats": repeats, **json.loads(lines[-1][len("RESULT ") :])}
        print(json.dumps({arm: {k: v for k, v in arms[arm].items() if k != "runs"}}), flush=True)

    native = arms["native"]
    result = {
        "benchmark": "sft",
        "what": "trained tokens/s (TRL's num_tokens / train_runtime): distill sft trainer vs bare TRL "
        "SFTTrainer with identical settings, and TRL with its own defaults (bf16, gradient checkpointing)",
        "model": EMBEDDED_MODEL_ID,
        "adapter": "LoRA r=16 alpha=32 all-linear",
        "loss": "completion only",
        "steps": a.steps,
        "batch_size": a.batch,
        "max_length": a.max_length,
        "rows": a.rows,
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "cpu": _cpu_name(),
            "bf16_instructions": [f for f in ("amx_bf16", "avx512_bf16") if f in _flags()],
        },
        "median_ratio": native["median_ratio"],
        "best_ratio": native["best_ratio"],
        "target_ratio": 0.95,
        "meets_target": native["median_ratio"] >= 0.95,
        "distill_tokens_per_s_median": native["distill_tokens_per_s_median"],
        "trl_tokens_per_s_median": native["trl_tokens_per_s_median"],
        "trl_defaults_tokens_per_s_median": native["trl_defaults_tokens_per_s_median"],
        "trl_defaults_best_tokens_per_s": native["trl_defaults_best_tokens_per_s"],
        "hardware_defaults_speedup": native["hardware_defaults_speedup"],
        "hardware_defaults_best_speedup": native["hardware_defaults_best_speedup"],
        "avx2_hardware_defaults_speedup": arms["avx2"]["hardware_defaults_speedup"] if "avx2" in arms else None,
        "avx2_hardware_defaults_best_speedup": arms["avx2"]["hardware_defaults_best_speedup"]
        if "avx2" in arms
        else None,
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "arms": arms,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "arms"}, indent=2))


def _flags() -> set[str]:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(line.partition(":")[2].split())


def _cpu_name() -> str:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()
    return line.partition(":")[2].strip()


if __name__ == "__main__":
    main()
