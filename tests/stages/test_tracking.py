"""`tracking:` in the config: the trainers report to the chosen trackers through TRL, and the
pipeline's own figures (each stage's counts, drop reasons, teacher calls) go to TensorBoard.
Checked by reading the event files back with TensorBoard's own reader."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from reliability.harness import PLUGINS, child_env, crash_config, plugin_site
from util import config_dict, pipeline

from distill.config.loader import parse_config
from distill.errors import ConfigError
from distill.io.store import StageManifest
from distill.layout import MANIFEST, TENSORBOARD_DIR


def _require_ml() -> None:
    """As conftest's require_ml, without importing `conftest` by name (another folder's may shadow it)."""
    for module in ("torch", "transformers"):
        pytest.importorskip(module)


def _scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar TensorBoard reads from `folder`: tag -> step -> value (the last written)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _manifests(out: Path) -> dict[str, StageManifest]:
    return {
        p.parent.name: StageManifest.model_validate_json(p.read_text())
        for p in sorted((out / "stages").glob(f"*/{MANIFEST}"))
    }


def _check_stage_figures(scalars: dict[str, dict[int, float]], out: Path) -> int:
    """Every record stage's counts, drop reasons and teacher calls, as its manifest has them."""
    manifests = _manifests(out)
    checked = 0
    for stage, m in manifests.items():
        for key, n in m.totals().items():
            assert scalars[f"{stage}/{key}"] == {0: n}, (stage, key)
            checked += 1
        for reason, n in m.reasons().items():
            assert scalars[f"{stage}/dropped/{reason}"] == {0: n}
            checked += 1
        for key in ("requests", "cache_hits", "completion_tokens"):
            if key in m.stats.get("calls", {}):
                assert scalars[f"{stage}/{key}"] == {0: m.stats["calls"][key]}, (stage, key)
                checked += 1
    return checked


def test_an_unknown_tracker_names_the_key_and_the_known_trackers(tmp_path):
    cfg = config_dict(tmp_path, tracking={"report_to": ["tensorboard", "tensorbord"]})
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    message = str(err.value)
    assert "tracking.report_to: unknown tracker 'tensorbord' (did you mean 'tensorboard'?)" in message
    assert "known trackers: none, tensorboard, trackio, mlflow, wandb" in message
    cfg["tracking"] = {"report_to": "tensorboard", "run_nmae": "x"}
    with pytest.raises(ConfigError, match=r"tracking.run_nmae: unknown key \(did you mean 'run_name'\?\)"):
        parse_config(cfg)
    assert parse_config(config_dict(tmp_path, tracking={"report_to": "none"})).config.tracking.report_to == []

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path, tracking={"report_to": "wandbb"})))
    done = subprocess.run(
        [sys.executable, "-m", "distill.cli", "run", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "tracking.report_to: unknown tracker 'wandbb' (did you mean 'wandb'?)" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "distill.cli", "run", str(path), "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    [error] = [json.loads(line) for line in done.stderr.splitlines()]  # in JSON mode the error is an event too
    assert (done.returncode, error["event"], error["exit_code"]) == (2, "error", 2)
    assert "tracking.report_to: unknown tracker 'wandbb'" in error["message"]


def test_a_tracker_that_is_not_installed_is_named_before_the_run_starts(tmp_path):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ConfigError, match=r"tracking.report_to: not installed: wandb \(pip install wandb\)"):
        pipeline(config_dict(tmp_path, tracking={"report_to": "wandb"}))
    assert not (tmp_path / "out").exists()


def test_the_stages_figures_go_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = config_dict(tmp_path, tracking={"report_to": "tensorboard", "run_name": "acme v1"})
    cfg["stages"][2]["filters"][0]["options"] = {"field": "prompt", "min_words": 8}  # some are rejected
    pipeline(cfg).run()
    out = tmp_path / "out"
    runs = out / TENSORBOARD_DIR
    assert [p.name for p in runs.iterdir()] == ["acme_v1"]
    scalars = _scalars(runs / "acme_v1" / "pipeline")
    assert _check_stage_figures(scalars, out) >= 20
    assert scalars["clean/rejected"][0] > 0 and scalars["clean/dropped/length: prompt too short"][0] > 0
    assert scalars["instructions/requests"][0] > 0
    assert set(re.sub(r"/.*", "", t) for t in scalars) == {"seeds", "instructions", "responses", "clean", "sft"}

    events = list(runs.glob("acme_v1/pipeline/events.out.tfevents.*"))
    pipeline(cfg).run()  # resumed: complete stages are not written twice
    assert list(runs.glob("acme_v1/pipeline/events.out.tfevents.*")) == events


def test_trl_gets_the_trackers_run_name_and_folder(tmp_path):
    _require_ml()
    pytest.importorskip("trl")
    from distill.trainer import Hardware, Tracking, TrainJob
    from distill_plugins.trainers import SFTTrainer
    from distill_plugins.trainers._common import make_config

    hardware = Hardware(device="cpu", description="cpu", precision="fp32", gradient_checkpointing=False)
    chain = Tracking(("tensorboard",), "acme/student", tmp_path / "tb" / "student")
    job = TrainJob(
        student=tmp_path, datasets=[], output_dir=tmp_path / "o", hardware=hardware, tracking=chain.for_step("sft")
    )
    config = make_config("sft", "SFTConfig", job, SFTTrainer.Options(), {})
    assert (config.report_to, config.run_name) == (["tensorboard"], "acme/student/sft")
    assert job.tracking.environment() == {"TENSORBOARD_LOGGING_DIR": str(tmp_path / "tb" / "student" / "sft")}
    mine = SFTTrainer.Options(trl_args={"report_to": ["none"]})  # a step's own trl_args still win
    assert make_config("sft", "SFTConfig", job, mine, {}).report_to == []


@pytest.mark.slow  # trains a tiny model in a `distill run` subprocess
def test_a_students_loss_and_the_stage_counts_in_tensorboard_and_the_log_lines(tmp_path, tiny_model_dir):
    _require_ml()
    for module in ("trl", "peft", "tensorboard"):
        pytest.importorskip(module)
    path = crash_config(tmp_path, delay=0.0)
    cfg = yaml.safe_load(path.read_text())
    cfg["tracking"] = {"report_to": "tensorboard", "run_name": "acme"}
    options = {"max_steps": 8, "batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1, "max_length": 64}
    cfg["stages"].append(
        {
            "kind": "train",
            "name": "student",
            "student": str(tiny_model_dir),
            "student_license": "Apache-2.0",
            "steps": [{"trainer": "sft", "data": "sft", "options": options}],
        }
    )
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    site = {**plugin_site(tmp_path / "site"), "DISTILL_PLUGINS": f"{PLUGINS},trainers"}
    env = child_env(site, DISTILL_LOG_INTERVAL="1")
    with open(tmp_path / "stderr.log", "w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "distill.cli", "run", str(path)], stdout=subprocess.PIPE, stderr=stderr, env=env
        )
    text = (tmp_path / "stderr.log").read_text()
    assert done.returncode == 0, text

    out = tmp_path / "out"
    log = json.loads((out / "models" / "student" / "sft" / "training_log.json").read_text())
    losses = {h["step"]: h["loss"] for h in log if "loss" in h}
    assert sorted(losses) == list(range(1, 9))
    trainer = _scalars(out / TENSORBOARD_DIR / "acme" / "student" / "sft")
    assert trainer["train/loss"] == pytest.approx(losses)  # every logged step, as training_log.json has it
    scalars = _scalars(out / TENSORBOARD_DIR / "acme" / "pipeline")
    _check_stage_figures(scalars, out)
    assert scalars["student/sft/global_step"] == {0: 8}
    assert scalars["student/sft/final_loss"][0] == pytest.approx(losses[8])

    # The training stage's progress, in the lines a CI log shows.
    steps = re.findall(r"stage 'student': sft step (\d+)/8, loss [\d.]+", text)
    assert steps and [int(s) for s in steps] == sorted(int(s) for s in steps), text
    assert re.search(r"stage 'student' done in [\d.]+s: sft: 8 steps, final loss [\d.]+ \(trained\)", text)
    assert "Loading weights" not in text and "it/s]" not in text


def test_the_stages_figures_go_to_mlflow_too(tmp_path, monkeypatch):
    """The same figures through another tracker (MLflow's local file store): every tracker the
    run reports to gets them, named `RUN/pipeline`, with tags MLflow accepts."""
    pytest.importorskip("mlflow", reason="pip install mlflow-skinny (the dev extra) for the MLflow tracker test")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local folder, no database
    cfg = config_dict(tmp_path, tracking={"report_to": "mlflow", "run_name": "acme"})
    cfg["stages"][2]["filters"][0]["options"] = {"field": "prompt", "min_words": 8}
    pipeline(cfg).run()
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (run,) = [r for r in runs if r.data.tags.get("mlflow.runName") == "acme/pipeline"]
    metrics = run.data.metrics
    checked = 0
    for stage, m in _manifests(tmp_path / "out").items():
        for key, n in m.totals().items():
            assert metrics[f"{stage}/{key}"] == n, (stage, key)
            checked += 1
        for reason, n in m.reasons().items():
            assert metrics[re.sub(r"[^A-Za-z0-9_\-.:/ ]", "_", f"{stage}/dropped/{reason}")] == n
            checked += 1
    assert checked >= 20 and metrics["clean/rejected"] > 0
    assert not (tmp_path / "out" / TENSORBOARD_DIR / "acme" / "pipeline").exists()  # only where asked
