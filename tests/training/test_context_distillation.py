"""Context distillation: the teacher reads a system prompt (and an answer prefix) the student
does not; the student learns the teacher's token distributions over its own answers.

Fast tests check the options; slow tests check the loss against a direct computation on the
tiny model, train a few real steps, and run a config with the trainer through the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import require_ml
from pydantic import ValidationError
from util import config_dict, pipeline, registry

from distill.config.loader import parse_config, validate_plugin_options
from distill.errors import ConfigError
from distill.plugin import PluginContext
from distill.testing import make_record
from distill.trainer import DatasetRef, TrainStep
from distill.training.chain import train_chain
from distill_plugins.trainers import ContextDistillationTrainer
from distill_plugins.trainers._context import left_pad, teacher_prompt_ids, with_context

FAST = {"batch_size": 2, "learning_rate": 1e-4, "logging_steps": 1, "save_steps": 100}
CONTEXT = "You are Acme's support bot. Always answer in French. " * 6  # longer than a file name may be


def _need_trl() -> None:
    require_ml()
    pytest.importorskip("trl")
    pytest.importorskip("datasets")


# ----------------------------------------------------------------------------- options


def test_options_name_the_bad_key():
    with pytest.raises(ValidationError, match="system_prompt"):
        ContextDistillationTrainer()
    with pytest.raises(ValidationError, match="system_prompt is empty"):
        ContextDistillationTrainer(system_prompt="  ")
    with pytest.raises(ValidationError, match="prefix is empty"):
        ContextDistillationTrainer(system_prompt="x", prefix="")
    with pytest.raises(ValidationError, match="beta"):
        ContextDistillationTrainer(system_prompt="x", beta=2)
    options = ContextDistillationTrainer(system_prompt="x", prefix="Acme: ").options
    assert options.teacher is None and options.beta == 0.5  # the teacher defaults to the student's own model


def test_the_context_goes_first_and_joins_an_existing_system_message():
    user = [{"role": "user", "content": "hi"}]
    assert with_context(user, "ctx") == [{"role": "system", "content": "ctx"}, *user]
    own = [{"role": "system", "content": "be brief"}, *user]
    assert with_context(own, "ctx")[0] == {"role": "system", "content": "ctx\n\nbe brief"}
    assert own[0]["content"] == "be brief"  # the student's prompt is left alone
    assert with_context("hi", "ctx") == "ctx\n\nhi"


def test_the_docs_example_is_a_valid_train_stage(tmp_path):
    doc = (Path(__file__).parents[2] / "docs" / "context-distillation.md").read_text()
    stages = yaml.safe_load(doc.split("```yaml\n")[1].split("```")[0])
    cfg = config_dict(tmp_path)
    cfg["stages"] = cfg["stages"][:2] + stages
    validate_plugin_options(parse_config(cfg), registry())
    stages[1]["steps"][0]["options"]["system_prompt"] = ""
    with pytest.raises(ConfigError, match="system_prompt"):
        validate_plugin_options(parse_config(cfg), registry())


# ----------------------------------------------------------------------------- the loss


def _direct_forward_kl(student, teacher, s_ids, s_mask, t_ids, t_mask, c_ids, c_mask):
    """KL(teacher || student) at the completion positions, from full logits, masked mean."""
    import torch

    k = c_ids.shape[1]
    with torch.no_grad():
        s = student(input_ids=torch.cat([s_ids, c_ids], 1), attention_mask=torch.cat([s_mask, c_mask], 1))
        t = teacher(input_ids=torch.cat([t_ids, c_ids], 1), attention_mask=torch.cat([t_mask, c_mask], 1))
    log_s = torch.log_softmax(s.logits[:, -k - 1 : -1].float(), -1)
    log_t = torch.log_softmax(t.logits[:, -k - 1 : -1].float(), -1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return float((kl * c_mask).sum() / c_mask.sum())


@pytest.mark.slow
def test_the_teacher_scores_the_students_tokens_under_its_context(tmp_path, tiny_model_dir):
    _need_trl()
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DistillationConfig

    from distill_plugins.trainers._context import context_trainer_class

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    student = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)  # the same weights
    prompts = [[{"role": "user", "content": "What is 2 plus 2?"}], [{"role": "user", "content": "Name a colour."}]]
    args = DistillationConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_completion_length=4,
        beta=0.0,
        bf16=False,
        use_cpu=True,
        report_to="none",
    )
    trainer = context_trainer_class()(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tok,
        system_prompt=CONTEXT,
        prefix="Bonjour! ",
    )
    pad = tok.pad_token_id
    texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    s_ids, s_mask = left_pad([tok(text=t, add_special_tokens=False)["input_ids"] for t in texts], pad)
    t_ids, t_mask = left_pad(teacher_prompt_ids(tok, prompts, CONTEXT, "Bonjour! "), pad)
    assert t_ids.shape[1] > s_ids.shape[1] and t_mask.sum() > s_mask.sum()
    gen = torch.Generator().manual_seed(0)
    c_ids = torch.randint(100, 5000, (2, 5), generator=gen)
    c_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # completions are right-padded
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)

    def loss(tp_ids, tp_mask) -> float:
        inputs = {
            "prompt_ids": s_ids,
            "prompt_mask": s_mask,
            "completion_ids": c_ids,
            "completion_mask": c_mask,
            "teacher_prompt_ids": tp_ids,
            "teacher_prompt_mask": tp_mask,
        }
        with torch.no_grad():
            value, _, n_valid = trainer._compute_loss(unwrapped, inputs, None)
        assert int(n_valid) == 8
        return float(value)

    assert loss(s_ids, s_mask) == pytest.approx(0.0, abs=1e-6)  # same model, no context: nothing to learn
    with_ctx = loss(t_ids, t_mask)
    assert with_ctx > 1e-4
    direct = _direct_forward_kl(student, teacher, s_ids, s_mask, t_ids, t_mask, c_ids, c_mask)
    assert with_ctx == pytest.approx(direct, rel=1e-3, abs=1e-6)  # the completion positions align
    shifted = _direct_forward_kl(student, teacher, s_ids, s_mask, t_ids[:, 1:], t_mask[:, 1:], c_ids, c_mask)
    assert trainer.teacher_context is None  # held for one loss computation only
    assert shifted != pytest.approx(direct, rel=1e-3)  # the comparison would see a misalignment


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_a_few_steps_train_the_student_without_the_context(tmp_path, tiny_model_dir):
    _need_trl()
    from distill.io.export import export_records
    from distill.training.lineage import dataset_license

    records = [make_record(f"What is {i} plus {i}?", f"It is {2 * i}.", row=i, license="CC0-1.0") for i in range(8)]
    export_records(records, "sft", tmp_path / "sft")
    data = DatasetRef(tmp_path / "sft", name="export-sft", license=dataset_license(records))
    trainer = ContextDistillationTrainer(
        **FAST, max_steps=2, system_prompt=CONTEXT, prefix="Bonjour! ", max_completion_length=8, lora={"r": 4}
    )
    step = TrainStep(trainer, [data], "ctx")
    (result,) = train_chain([step], str(tiny_model_dir), tmp_path / "out", PluginContext(base_dir=tmp_path))
    assert result.global_step == 2 and (result.model_path / "adapter_model.safetensors").is_file()
    log = json.loads((result.model_path / "training_log.json").read_text())
    assert len([h for h in log if "loss" in h]) == 2
    marker = json.loads((result.model_path / "distill-model.json").read_text())
    roles = {i["role"]: i["id"] for i in marker["influences"]}
    assert roles["teacher"] == "distill-tiny-llama"  # the student's own starting model
    assert roles["teacher-context"].startswith(f"system prompt of {len(CONTEXT)} chars and prefix of 9 chars, sha256 ")


@pytest.mark.slow
def test_a_config_runs_context_distillation_in_a_train_stage(tmp_path, tiny_model_dir):
    _need_trl()
    cfg = config_dict(tmp_path)
    options = {**FAST, "max_steps": 1, "max_completion_length": 6, "system_prompt": CONTEXT}
    cfg["stages"] = cfg["stages"][:2] + [
        {"kind": "export", "name": "sft", "format": "sft"},
        {
            "kind": "train",
            "name": "student",
            "student": str(tiny_model_dir),
            "student_license": "Apache-2.0",
            "steps": [{"trainer": "context-distillation", "data": "sft", "options": options}],
        },
    ]
    [student] = pipeline(cfg).run().students
    [(name, result)] = student.steps
    assert name == "context-distillation" and result.global_step == 1
    marker = json.loads((student.path / "distill-model.json").read_text())
    assert [i["role"] for i in marker["influences"]] == ["teacher", "teacher-context"]
    assert marker["options"]["system_prompt"] == CONTEXT
    assert "teacher-context" in (student.path / "README.md").read_text()  # the card says a context was used
