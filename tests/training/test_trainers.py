"""Trainers: real TRL training of a tiny Llama with SmolLM2's tokenizer, a few steps each.

Fast tests check options, bad input and the core's resume bookkeeping; tests marked slow
train for real (SFT -> DPO chain, reward model -> ranker and GRPO, on-policy distillation,
kill and resume).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_ml
from pydantic import ValidationError

from distill.errors import ConfigError, PluginError, StoreError
from distill.plugin import PluginContext
from distill.testing import make_record
from distill.trainer import DatasetRef, Hardware, TrainJob, TrainStep
from distill.training.chain import Job, run_job, train_chain
from distill.training.checkpoints import last_checkpoint
from distill.training.hardware import plan_hardware
from distill_plugins.trainers import DistillationTrainer, DPOTrainer, GRPOTrainer, RewardModelTrainer, SFTTrainer

pytestmark = pytest.mark.slow  # trains real models

FAST = {"batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 100}


def _need_trl() -> None:
    require_ml()
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An `sft` and a `preference` export of 16 records, written by distill's own exporter."""
    _need_trl()
    from distill.io.export import export_records
    from distill.training.lineage import dataset_license

    records = [
        make_record(
            f"What is {i} plus {i}?",
            f"It is {2 * i}.",
            row=i,
            license="CC0-1.0",
            candidates=[(f"It is {2 * i}.", 1.0), ("No idea, sorry.", 0.0)],
        )
        for i in range(16)
    ]
    root = tmp_path_factory.mktemp("exports")
    export_records(records, "sft", root / "sft")
    export_records(records, "preference", root / "pref")
    tag = dataset_license(records)
    return {
        "sft": DatasetRef(root / "sft", name="export-sft", license=tag),
        "pref": DatasetRef(root / "pref", name="export-pref", license=tag),
        "records": records,
    }


def _ctx(tmp_path: Path) -> PluginContext:
    return PluginContext(base_dir=tmp_path, progress=False)


def _losses(folder: Path) -> list[float]:
    return [h["loss"] for h in json.loads((folder / "training_log.json").read_text()) if "loss" in h]


# ----------------------------------------------------------------------------- options


def test_unknown_trl_arg_is_a_config_error_naming_the_key(tmp_path):
    _need_trl()
    with pytest.raises(ValidationError) as err:
        SFTTrainer.Options(trl_args={"warmup_step": 2})
    message = str(err.value)
    assert "warmup_step" in message and "SFTConfig" in message and "did you mean 'warmup_steps'" in message
    with pytest.raises(ValidationError, match="output_dir: set by distill"):
        DPOTrainer.Options(trl_args={"output_dir": "x"})
    job = Job(
        student="embedded",
        output=tmp_path / "out",
        steps=[
            {
                "name": "s",
                "trainer": "grpo",
                "datasets": [tmp_path],
                "options": {"reward_functions": ["m:f"], "trl_args": {"num_generation": 2}},
            }
        ],
    )
    with pytest.raises(ConfigError, match=r"step 's' \(grpo trainer\).*num_generation.*GRPOConfig"):
        run_job(job, tmp_path)


def test_known_trl_args_pass_through_and_hardware_wins_over_library_defaults(tmp_path):
    _need_trl()
    from trl import SFTConfig

    from distill_plugins.trainers._common import make_config

    options = SFTTrainer.Options(trl_args={"warmup_steps": 3, "lr_scheduler_type": "constant"})
    hardware = Hardware(device="cpu", description="cpu", precision="fp32", gradient_checkpointing=False)
    job = TrainJob(student=tmp_path, datasets=[], output_dir=tmp_path / "o", hardware=hardware)
    config = make_config("sft", "SFTConfig", job, options, {"max_length": 64})
    assert (config.warmup_steps, config.lr_scheduler_type.value, config.max_length) == (3, "constant", 64)
    assert (config.bf16, config.gradient_checkpointing, config.use_cpu, config.report_to) == (False, False, True, [])
    assert config.output_dir == str(tmp_path / "o" / "checkpoints")
    library = SFTConfig(output_dir=str(tmp_path / "t"), use_cpu=True)  # what TRL alone would do on a CPU
    assert library.bf16 is True and library.gradient_checkpointing is True
    with pytest.raises(ConfigError, match="sft trainer: TRL SFTConfig rejected"):
        make_config("sft", "SFTConfig", job, SFTTrainer.Options(trl_args={"lr_scheduler_type": "nope"}), {})


def test_trainer_options_are_checked():
    with pytest.raises(ValidationError, match="GRPO needs a reward"):
        GRPOTrainer.Options()
    with pytest.raises(ValidationError, match="reward_weights has 1 values for 2 rewards"):
        GRPOTrainer.Options(reward_model="rm", reward_functions=["m:f"], reward_weights=[1.0])
    with pytest.raises(ValidationError, match="teacher"):
        DistillationTrainer.Options()
    assert SFTTrainer.Options(lora=True).lora.r == 16
    assert SFTTrainer.Options().completion_only_loss is True
    with pytest.raises(ValidationError, match="batch_sise"):
        SFTTrainer.Options(batch_sise=2)


def test_hardware_plan_on_this_machine(monkeypatch):
    require_ml()
    import torch

    plan = plan_hardware(params=6_600_000)
    if not torch.cuda.is_available():
        assert plan.device == "cpu" and plan.trl_args()["use_cpu"] is True
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        native = "amx_bf16" in flags or "avx512_bf16" in flags
        assert plan.precision == ("bf16" if native else "fp32")
    assert plan.gradient_checkpointing is False and any("only cost time" in r for r in plan.reasons)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # torch capped below the bf16 instructions
    if not torch.cuda.is_available():
        assert plan_hardware(params=1).precision == "fp32"
    huge = plan_hardware(params=10**12)
    assert huge.gradient_checkpointing is True and "recomputed" in " ".join(huge.reasons)
    forced = plan_hardware("bf16", True, params=1)
    assert forced.precision == "bf16" and forced.gradient_checkpointing and forced.trl_args()["bf16"] is True


def test_last_checkpoint_ignores_half_written_ones(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert last_checkpoint(tmp_path / "missing") is None


def test_prompt_completion_split_keeps_the_conversation():
    pytest.importorskip("datasets")
    import datasets

    from distill_plugins.trainers._common import to_prompt_completion

    convo = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    row = to_prompt_completion(datasets.Dataset.from_list([{"messages": convo}]), "sft", "x")[0]
    assert row["prompt"] == convo[:4] and row["completion"] == convo[4:]


# ----------------------------------------------------------------------------- bad input


def test_missing_column_names_the_column_and_the_trainer(tmp_path, data, tiny_model_dir):
    steps = [TrainStep(SFTTrainer(**FAST, max_steps=1), [data["pref"]], "sft")]
    with pytest.raises(PluginError, match=r"sft trainer: dataset .*pref has no 'messages' column .*format: sft"):
        train_chain(steps, str(tiny_model_dir), tmp_path / "out", _ctx(tmp_path))
    steps = [TrainStep(DPOTrainer(**FAST, max_steps=1), [data["sft"]], "dpo")]
    with pytest.raises(PluginError, match=r"dpo trainer: dataset .*sft has no 'prompt' column .*format: preference"):
        train_chain(steps, str(tiny_model_dir), tmp_path / "out2", _ctx(tmp_path))
    steps = [TrainStep(SFTTrainer(**FAST), [DatasetRef(tmp_path / "nothing")], "sft")]
    with pytest.raises(PluginError, match="sft trainer: dataset folder .*nothing does not exist"):
        train_chain(steps, str(tiny_model_dir), tmp_path / "out3", _ctx(tmp_path))


def test_student_that_cannot_be_found_or_loaded(tmp_path, data):
    steps = [TrainStep(SFTTrainer(**FAST, max_steps=1), [data["sft"]], "sft")]
    with pytest.raises(PluginError, match=r"sft trainer: student model folder .*no-such-model does not exist"):
        train_chain(steps, "no-such-model", tmp_path / "out", _ctx(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PluginError, match=r"sft trainer: cannot load the student model from .*broken"):
        train_chain(steps, str(broken), tmp_path / "out", _ctx(tmp_path))


def test_teacher_with_another_vocabulary_is_refused(tmp_path, data, tiny_model_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other-teacher"
    LlamaForCausalLM(
        LlamaConfig(
            hidden_size=64,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=1000,
        )
    ).save_pretrained(other)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model_dir / name).exists():
            (other / name).write_bytes((tiny_model_dir / name).read_bytes())
    steps = [TrainStep(DistillationTrainer(**FAST, max_steps=1, teacher=str(other)), [data["sft"]], "kd")]
    with pytest.raises(PluginError, match="do not share a tokenizer"):
        train_chain(steps, str(tiny_model_dir), tmp_path / "out", _ctx(tmp_path))


def test_output_of_another_run_is_not_mixed_in(tmp_path, data, tiny_model_dir):
    out = tmp_path / "out" / "sft"
    out.mkdir(parents=True)
    (out / "distill-train.json").write_text('{"fingerprint": "from-other-settings"}')
    steps = [TrainStep(SFTTrainer(**FAST, max_steps=1), [data["sft"]], "sft")]
    with pytest.raises(StoreError, match="other settings"):
        train_chain(steps, str(tiny_model_dir), tmp_path / "out", _ctx(tmp_path))


# ----------------------------------------------------------------------------- real training


@pytest.mark.slow
def test_sft_then_dpo_chain_with_lineage_card_and_license(tmp_path, data, tiny_model_dir):
    steps = [
        TrainStep(SFTTrainer(**FAST, max_steps=4), [data["sft"]], "sft"),
        TrainStep(DPOTrainer(**FAST, max_steps=2, lora={"r": 8}, merge=True), [data["pref"]], "dpo"),
    ]
    sft, dpo = train_chain(steps, str(tiny_model_dir), tmp_path / "out", _ctx(tmp_path), name="tiny-student")
    losses = _losses(sft.model_path)
    assert len(losses) == 4 and losses[-1] < losses[0]  # completion-only SFT learns the answers
    assert (sft.model_path / "model.safetensors").is_file() and not (sft.model_path / "checkpoints").exists()
    assert not list(sft.model_path.glob("*.bin"))  # no pickles
    out = tmp_path / "out" / "dpo"
    assert dpo.adapter and (out / "adapter_model.safetensors").is_file()
    assert dpo.model_path == out / "merged" and (out / "merged" / "model.safetensors").is_file()
    assert dpo.global_step == 2
    assert _losses(out)[0] == pytest.approx(0.6931, abs=1e-2)  # log 2: the policy starts as its reference

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "merged").config.vocab_size > 0
    marker = json.loads((out / "distill-model.json").read_text())
    assert marker["model"] == "tiny-student" and marker["kind"] == "adapter"
    assert marker["base_model"]["id"] == "distill-tiny-llama"
    assert marker["parent"]["id"] == "tiny-student-sft"
    assert marker["parent"]["path"] == str(sft.model_path.resolve())
    assert [e["step"] for e in marker["lineage"]] == ["sft", "dpo"]
    ds = marker["datasets"][0]
    assert ds["path"] == str(data["pref"].path.resolve()) and len(ds["digest"]) == 64 and ds["rows"] == 16
    assert marker["license"] == "Apache-2.0 AND CC0-1.0"  # base model and data
    assert marker["trainer"]["libraries"]["trl"] and marker["options"]["lora"]["r"] == 8
    assert marker["hardware"]["precision"] in ("fp32", "bf16") and "final_loss" in marker["metrics"]
    assert json.loads((out / "merged" / "distill-model.json").read_text()) == marker
    card = (out / "README.md").read_text()
    for text in ("# tiny-student", "distill-tiny-llama", "Apache-2.0 AND CC0-1.0", "export-pref", "## Lineage"):
        assert text in card

    from distill.models.folders import model_identity

    identity = model_identity(str(out / "merged"), "transformers")
    assert (identity.model, identity.license) == ("tiny-student", "Apache-2.0 AND CC0-1.0")

    again = train_chain(steps, str(tiny_model_dir), tmp_path / "out", _ctx(tmp_path), name="tiny-student")
    assert [r.skipped for r in again] == [True, True] and again[1].model_path == dpo.model_path


@pytest.mark.slow
def test_an_adapter_chain_trains_on_top_of_the_earlier_adapter(tmp_path, data, tiny_model_dir):
    """LoRA SFT then LoRA DPO: the DPO adapter must sit on the SFT-merged weights, or loading
    it would silently drop everything SFT taught."""
    import torch
    from safetensors.torch import load_file

    steps = [
        TrainStep(SFTTrainer(**FAST, max_steps=3, lora={"r": 8}), [data["sft"]], "sft"),
        TrainStep(DPOTrainer(**FAST, max_steps=1, lora={"r": 8}), [data["pref"]], "dpo"),
    ]
    sft, dpo = train_chain(steps, str(tiny_model_dir), tmp_path / "out", _ctx(tmp_path))
    merged = sft.model_path / "merged"
    base = json.loads((dpo.model_path / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).resolve() == merged.resolve() and (merged / "config.json").is_file()
    assert json.loads((dpo.model_path / "distill-model.json").read_text())["parent"]["path"] == str(merged.resolve())
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(merged / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)  # SFT is in the base of DPO


@pytest.mark.slow
def test_reward_model_feeds_the_ranker_and_grpo(tmp_path, data, tiny_model_dir):
    # The reward model starts from an SFT LoRA adapter and is a LoRA itself, merged by default.
    sft = TrainStep(SFTTrainer(**FAST, max_steps=2, lora={"r": 8}), [data["sft"]], "sft")
    rm = TrainStep(RewardModelTrainer(**FAST, max_steps=4, lora={"r": 8}), [data["pref"]], "rm")
    grpo = TrainStep(
        GRPOTrainer(
            **{**FAST, "batch_size": 2, "learning_rate": 1e-4},
            max_steps=2,
            num_generations=2,
            max_completion_length=8,
            reward_model="rm",
            reward_functions=[
                "reward_fns:prefers_short",
                {"plugin": "reward-function", "options": {"function": "reward_fns:acme_rubric"}},
            ],
        ),
        [data["sft"]],
        "grpo",
        student=str(tiny_model_dir),
    )
    _, rm_result, grpo_result = train_chain([sft, rm, grpo], str(tiny_model_dir), tmp_path / "out", _ctx(tmp_path))
    assert rm_result.adapter and rm_result.model_path == tmp_path / "out" / "rm" / "merged"
    assert _losses(tmp_path / "out" / "rm")[-1] < _losses(tmp_path / "out" / "rm")[0]

    from distill_plugins.rankers import RewardModelRanker

    ranker = RewardModelRanker(model=str(rm_result.model_path))
    ranker.setup(_ctx(tmp_path))
    scores = ranker.score_batch(data["records"][:8], None)
    assert all(len(s) == 2 for s in scores)
    (judge,) = ranker.generators()  # its terms reach what it ranks: those it inherited in training
    assert judge.role == "judge" and judge.plugin == "reward-model" and len(judge.file_hash or "") == 64
    assert judge.license == json.loads((rm_result.model_path / "distill-model.json").read_text())["license"]
    assert sum(s[0] - s[1] for s in scores) > 0  # chosen above rejected after training

    rm_marker = json.loads((rm_result.model_path / "distill-model.json").read_text())
    assert rm_marker["kind"] == "adapter" and rm_marker["parent"]["id"] == "out-sft"
    log = json.loads((grpo_result.model_path / "training_log.json").read_text())
    assert grpo_result.global_step == 2
    keys = set().union(*log)
    assert {"rewards/prefers_short/mean", "rewards/reward-function/mean", "rewards/rm/mean"} <= keys
    marker = json.loads((grpo_result.model_path / "distill-model.json").read_text())
    roles = [(i["role"], i["id"]) for i in marker["influences"]]
    assert ("reward-model", "out-rm") in roles and ("reward-function", "reward_fns:prefers_short") in roles


@pytest.mark.slow
def test_on_policy_distillation_from_a_local_teacher(tmp_path, data, tiny_model_dir):
    from distill.models.embedded import write_marker
    from distill.testing import tiny_model

    teacher = tiny_model(tmp_path / "teacher", seed=1)
    write_marker(teacher, model="tiny-teacher", license="MIT")
    step = TrainStep(
        DistillationTrainer(
            **{**FAST, "batch_size": 2, "learning_rate": 1e-4},
            max_steps=2,
            teacher=str(teacher),
            max_completion_length=8,
        ),
        [data["pref"]],
        "kd",
    )
    (result,) = train_chain([step], str(tiny_model_dir), tmp_path / "out", _ctx(tmp_path))
    assert result.global_step == 2 and len(_losses(result.model_path)) == 2
    marker = json.loads((result.model_path / "distill-model.json").read_text())
    assert marker["influences"][0]["role"] == "teacher" and marker["influences"][0]["id"] == "tiny-teacher"
    assert marker["license"] == "Apache-2.0 AND CC0-1.0 AND MIT"  # the teacher's terms come along


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(tmp_path, data, tiny_model_dir):
    job = tmp_path / "job.json"
    out = tmp_path / "out"
    job.write_text(
        json.dumps(
            {
                "student": str(tiny_model_dir),
                "output": str(out),
                "name": "resumed",
                "steps": [
                    {
                        "name": "sft",
                        "trainer": "sft",
                        "datasets": [str(data["sft"].path)],
                        "options": {**FAST, "batch_size": 2, "max_steps": 8, "save_steps": 3},
                    }
                ],
            }
        )
    )
    cmd = [sys.executable, "-m", "distill.training", str(job)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoints = out / "sft" / "checkpoints"
    deadline = time.monotonic() + 120
    while last_checkpoint(checkpoints) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "training finished before the kill: make it longer"
    killed_at = last_checkpoint(checkpoints)
    assert killed_at is not None and not (out / "sft" / "distill-model.json").exists()

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["global_step"] == 8 and result["resumed_from"].endswith(killed_at.name)
    steps = [h["step"] for h in json.loads((out / "sft" / "training_log.json").read_text()) if "loss" in h]
    assert steps == list(range(1, 9))  # the log of the killed part was restored, nothing trained twice
    marker = json.loads((out / "sft" / "distill-model.json").read_text())
    assert marker["resumed_from"].endswith(killed_at.name) and marker["global_step"] == 8
    assert not checkpoints.exists()
