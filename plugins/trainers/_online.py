"""The trainers that generate while they train: GRPO (rewarded by a reward model and/or reward
functions) and on-policy distillation from a local teacher's token distributions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from distill.errors import PluginError
from distill.models.folders import resolve_student
from distill.plugin import Options
from distill.registry import make_registry
from distill.trainer import Trainer, TrainJob, TrainOptions, TrainResult, import_trl
from distill_plugins.rankers import load_callable
from distill_plugins.trainers._common import (
    finish,
    load_data,
    load_model,
    load_student,
    load_tokenizer,
    make_config,
    peft_config,
    require,
    run,
)

_LIBS = ("trl", "transformers", "datasets", "torch")


class RewardPluginRef(Options):
    """A ranker plugin that scores one answer: `{plugin: reward-function, options: {function: ...}}`."""

    plugin: str
    options: dict[str, Any] = Field(default_factory=dict)


def _model_ref(value: str, job: TrainJob, base_dir: Path, who: str, role: str) -> Path:
    """An earlier step's name, a model folder, or 'embedded'."""
    return job.outputs[value] if value in job.outputs else resolve_student(value, base_dir, who, role)


class GRPOTrainer(Trainer):
    """TRL's GRPOTrainer: the student answers each prompt `num_generations` times and learns from
    the rewards, given by a trained reward model and/or reward functions (the same
    `f(prompt, response, **kwargs) -> float` the reward-function ranker calls)."""

    name = "grpo"
    formats = ("sft", "preference")

    class Options(TrainOptions):
        trl_config = "GRPOConfig"
        reward_model: str | None = Field(
            None, description="A reward model folder, or the name of an earlier step (e.g. a reward-model step)."
        )
        reward_functions: list[str | RewardPluginRef] = Field(
            default_factory=list,
            description="'package.module:function', or a ranker plugin with a `reward` "
            "method: {plugin: reward-function, options: {...}}.",
        )
        reward_weights: list[float] | None = Field(
            None, description="One per reward: the model first, then the functions in order."
        )
        num_generations: int = Field(4, ge=2, description="Answers per prompt; advantages compare them.")
        max_completion_length: int = Field(256, ge=1)
        temperature: float = Field(1.0, gt=0)
        beta: float | None = Field(None, ge=0, description="KL penalty towards the reference; TRL's default.")

        @model_validator(mode="after")
        def _rewards(self) -> GRPOTrainer.Options:
            n = len(self.reward_functions) + (self.reward_model is not None)
            if n == 0:
                raise ValueError("set reward_model and/or reward_functions: GRPO needs a reward")
            if self.reward_weights is not None and len(self.reward_weights) != n:
                raise ValueError(f"reward_weights has {len(self.reward_weights)} values for {n} rewards")
            return self

    def train(self, job: TrainJob) -> TrainResult:
        require(self.name, *_LIBS, *(("peft",) if self.options.lora else ()))
        o = self.options
        ds = load_data(job, self.name, "prompt")
        model, tok = load_student(job, self.name, o)
        funcs: list[Any] = []
        classes: list[Any] = []
        influences: list[tuple[str, str]] = []
        if o.reward_model is not None:
            path = _model_ref(o.reward_model, job, self.context.base_dir, self.name, "reward_model")
            funcs.append(load_model(path, self.name, head="reward", role="reward"))
            rtok = load_tokenizer(path, self.name, role="reward model")
            funcs[-1].config.pad_token_id = rtok.pad_token_id
            funcs[-1].config._name_or_path = o.reward_model  # TRL logs the reward under its last part
            classes.append(rtok)
            influences.append(("reward-model", str(path)))
        for ref in o.reward_functions:
            name, fn = self._reward_function(ref)
            funcs.append(_batched(fn, name))
            classes.append(None)
            influences.append(("reward-function", name))
        config = make_config(
            self.name,
            "GRPOConfig",
            job,
            o,
            {
                "num_generations": o.num_generations,
                "max_completion_length": o.max_completion_length,
                "temperature": o.temperature,
                "beta": o.beta,
                "reward_weights": o.reward_weights,
            },
            progress=self.context.progress,
        )
        TRLGRPOTrainer = import_trl("GRPOTrainer")

        trainer = TRLGRPOTrainer(
            model=model,
            reward_funcs=funcs,
            args=config,
            train_dataset=ds,
            processing_class=tok,
            reward_processing_classes=classes,
            peft_config=peft_config(o),
        )
        return finish(trainer, job, run(trainer, job), o, merge=bool(o.merge), influences=influences)

    def _reward_function(self, ref: str | RewardPluginRef) -> tuple[str, Callable[..., float]]:
        if isinstance(ref, str):
            return ref, load_callable(ref, self.context.base_dir)

        spec = make_registry().get("ranker", ref.plugin)
        if not callable(getattr(spec.cls, "reward", None)):
            raise PluginError(f"grpo trainer: ranker plugin {ref.plugin!r} has no `reward(prompt, response)` method")
        ranker = spec.cls(**ref.options)
        ranker.setup(self.context)
        return ref.plugin, ranker.reward


def _batched(fn: Callable[..., float], name: str) -> Callable[..., list[float]]:
    """TRL's reward signature (batches of prompts and completions) around distill's per-answer one."""

    def reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        out = []
        for prompt, completion in zip(prompts, completions):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            try:
                out.append(float(fn(messages, text)))
            except Exception as exc:
                raise PluginError(
                    f"grpo trainer: reward function {name!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
        return out

    reward.__name__ = name.rpartition(":")[2] or name
    return reward


class DistillationTrainer(Trainer):
    """On-policy distillation with TRL's DistillationTrainer: the student answers the prompts and
    learns the teacher's token distributions over its own answers (generalised JSD), not only
    the teacher's text. The teacher is a local model sharing the student's tokenizer."""

    name = "distillation"
    formats = ("sft", "preference")

    class Options(TrainOptions):
        trl_config = "DistillationConfig"
        teacher: str = Field(description="The teacher's local model folder, 'embedded', or an earlier step's name.")
        beta: float = Field(0.5, ge=0, le=1, description="0 forward KL, 0.5 JSD, 1 reverse KL.")
        temperature: float = Field(1.0, gt=0)
        max_completion_length: int = Field(256, ge=1)

    def train(self, job: TrainJob) -> TrainResult:
        require(self.name, *_LIBS, *(("peft",) if self.options.lora else ()))
        import torch

        o = self.options
        ds = load_data(job, self.name, "prompt")
        model, tok = load_student(job, self.name, o)
        path = self.teacher_path(job)
        ttok = load_tokenizer(path, self.name, role="teacher")
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(job.hardware.precision)
        teacher = load_model(path, self.name, role="teacher", dtype=half or torch.float32)
        if ttok.get_vocab() != tok.get_vocab() or teacher.config.vocab_size != model.config.vocab_size:
            raise PluginError(
                f"distillation trainer: the teacher {path} and the student {job.student} do not share a "
                "tokenizer; on-policy distillation compares their token distributions"
            )
        config = make_config(
            self.name,
            "DistillationConfig",
            job,
            o,
            {
                "beta": o.beta,
                "temperature": o.temperature,
                "max_completion_length": o.max_completion_length,
            },
            progress=self.context.progress,
        )
        trainer = self.trl_trainer(
            model=model,
            teacher_model=teacher,
            args=config,
            train_dataset=ds,
            processing_class=tok,
            peft_config=peft_config(o),
        )
        return finish(trainer, job, run(trainer, job), o, merge=bool(o.merge), influences=self.influences(path))

    def teacher_path(self, job: TrainJob) -> Path:
        """The teacher's folder, resolved like every model reference in a train stage."""
        return _model_ref(self.options.teacher, job, self.context.base_dir, self.name, "teacher")

    def trl_trainer(self, **kwargs: Any) -> Any:
        """TRL's trainer; a subclass (context distillation) swaps in its own loss here."""
        return import_trl("DistillationTrainer")(**kwargs)

    def influences(self, teacher: Path) -> list[tuple[str, str]]:
        """What the model card records as having shaped the model besides the data."""
        return [("teacher", str(teacher))]
