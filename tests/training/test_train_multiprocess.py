"""The same SFT trainer under `accelerate launch` with two CPU processes (DDP over gloo)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import require_ml

from distill.testing import make_record


@pytest.mark.slow
def test_sft_runs_in_two_processes_with_a_decreasing_loss(tmp_path, tiny_model_dir):
    require_ml()
    for module in ("trl", "accelerate", "datasets"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed (pip install 'distill[train]')")
    from distill.io.export import export_records

    records = [make_record(f"What is {i} plus {i}?", f"It is {2 * i}.", row=i) for i in range(16)]
    export_records(records, "sft", tmp_path / "sft")
    out = tmp_path / "out"
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "student": str(tiny_model_dir),
                "output": str(out),
                "name": "ddp-student",
                "steps": [
                    {
                        "name": "sft",
                        "trainer": "sft",
                        "datasets": [str(tmp_path / "sft")],
                        "options": {
                            "max_steps": 6,
                            "batch_size": 2,
                            "learning_rate": 1e-3,
                            "logging_steps": 1,
                            "save_steps": 3,
                        },
                    }
                ],
            }
        )
    )
    # accelerate's torchrun launcher ("--multi_gpu"); with no GPU the processes train on the CPU over gloo.
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
        "-m",
        "distill.training",
        str(job),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only the main process reports and writes
    result = json.loads(lines[0])
    assert result["global_step"] == 6
    log = json.loads((out / "sft" / "training_log.json").read_text())
    losses = [h["loss"] for h in log if "loss" in h]
    assert len(losses) == 6 and losses[-1] < losses[0] and sum(b < a for a, b in zip(losses, losses[1:])) >= 4
    # 16 rows, 2 per process per step, 2 processes: an epoch is 4 steps, so 6 steps are 1.5 epochs.
    assert log[-1]["epoch"] == pytest.approx(1.5)
    marker = json.loads((out / "sft" / "distill-model.json").read_text())
    assert marker["hardware"]["processes"] == 2 and (out / "sft" / "model.safetensors").is_file()
