"""Supervised fine-tuning, a reward model, and DPO: the trainers that read exported data as is."""

from __future__ import annotations

from pydantic import Field

from distill.trainer import Trainer, TrainJob, TrainOptions, TrainResult, import_trl
from distill_plugins.trainers._common import (
    finish,
    load_data,
    load_student,
    make_config,
    peft_config,
    require,
    run,
    to_prompt_completion,
)

_LIBS = ("trl", "transformers", "datasets", "torch")


class SFTTrainer(Trainer):
    """TRL's SFTTrainer on an `sft` export (conversations), full fine-tuning or a LoRA adapter.
    By default the loss is on the final assistant turn only (prompt/completion format)."""

    name = "sft"
    formats = ("sft",)

    class Options(TrainOptions):
        trl_config = "SFTConfig"
        completion_only_loss: bool = Field(
            True, description="Loss on the final assistant answer only; False trains on the whole conversation."
        )
        max_length: int | None = Field(1024, ge=8, description="Tokens per example; longer ones are truncated.")
        packing: bool = Field(False, description="Pack several examples into one sequence.")

    def train(self, job: TrainJob) -> TrainResult:
        require(self.name, *_LIBS, *(("peft",) if self.options.lora else ()))
        o = self.options
        ds = load_data(job, self.name, "sft")
        if o.completion_only_loss and "messages" in ds.column_names:
            ds = to_prompt_completion(ds, self.name, ", ".join(str(r.path) for r in job.datasets))
        prompt_completion = "completion" in ds.column_names
        model, tok = load_student(job, self.name, o)
        config = make_config(
            self.name,
            "SFTConfig",
            job,
            o,
            {
                "max_length": o.max_length,
                "packing": o.packing,
                "completion_only_loss": o.completion_only_loss if prompt_completion else None,
            },
            progress=self.context.progress,
        )
        TRLSFTTrainer = import_trl("SFTTrainer")

        trainer = TRLSFTTrainer(
            model=model, args=config, train_dataset=ds, processing_class=tok, peft_config=peft_config(o)
        )
        return finish(trainer, job, run(trainer, job), o, merge=bool(o.merge))


class RewardModelTrainer(Trainer):
    """TRL's RewardTrainer on a `preference` export: a one-logit sequence classifier that the
    `reward-model` ranker and the `grpo` trainer load. With LoRA it is merged by default, so the
    output is a plain model folder."""

    name = "reward-model"
    formats = ("preference",)
    produces = "reward"

    class Options(TrainOptions):
        trl_config = "RewardConfig"
        max_length: int | None = Field(1024, ge=8)
        use_margin: bool = Field(False, description="Add the export's `margin` (score difference) to the loss.")

    def train(self, job: TrainJob) -> TrainResult:
        require(self.name, *_LIBS, *(("peft",) if self.options.lora else ()))
        o = self.options
        ds = load_data(job, self.name, "preference", extra=("margin",) if o.use_margin else ())
        model, tok = load_student(job, self.name, o, head="reward")
        config = make_config(
            self.name, "RewardConfig", job, o, {"max_length": o.max_length}, progress=self.context.progress
        )
        TRLRewardTrainer = import_trl("RewardTrainer")

        trainer = TRLRewardTrainer(
            model=model, args=config, train_dataset=ds, processing_class=tok, peft_config=peft_config(o, "SEQ_CLS")
        )
        return finish(trainer, job, run(trainer, job), o, merge=o.merge is not False)


class DPOTrainer(Trainer):
    """TRL's DPOTrainer on a `preference` export; the reference model is the student as it
    starts (with LoRA: the base with the adapter switched off)."""

    name = "dpo"
    formats = ("preference",)

    class Options(TrainOptions):
        trl_config = "DPOConfig"
        beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
        max_length: int | None = Field(1024, ge=8)

    def train(self, job: TrainJob) -> TrainResult:
        require(self.name, *_LIBS, *(("peft",) if self.options.lora else ()))
        o = self.options
        ds = load_data(job, self.name, "preference")
        model, tok = load_student(job, self.name, o)
        config = make_config(
            self.name, "DPOConfig", job, o, {"beta": o.beta, "max_length": o.max_length}, progress=self.context.progress
        )
        TRLDPOTrainer = import_trl("DPOTrainer")

        trainer = TRLDPOTrainer(
            model=model, args=config, train_dataset=ds, processing_class=tok, peft_config=peft_config(o)
        )
        return finish(trainer, job, run(trainer, job), o, merge=bool(o.merge))
