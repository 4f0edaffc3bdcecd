"""What the first-party TRL trainers share: reading exported datasets, loading the student,
building the TRL config from distill's options, running with resume, and saving the result.

Heavy libraries (torch, transformers, TRL, PEFT, datasets) are imported inside the functions.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, PluginError
from distill.trainer import (
    TrainJob,
    TrainOptions,
    TrainResult,
    check_trl_args,
    import_trl,
    is_main_process,
    trl_config_fields,
)
from distill.training.adapters import load_model, load_tokenizer, merged_folder  # noqa: F401 - plugins' path

_INSTALL = "pip install 'distill[train]'"


def require(who: str, *modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise PluginError(f"{who} trainer needs {', '.join(missing)}: {_INSTALL}")


# ----------------------------------------------------------------------------- data

#: The columns each kind of trainer reads, and the export format that writes them.
FORMATS = {
    "sft": ("messages", "sft"),
    "preference": ("prompt, chosen, rejected", "preference"),
    "prompt": ("prompt (or messages)", "sft or preference"),
}


def load_data(job: TrainJob, who: str, kind: str, extra: tuple[str, ...] = ()) -> Any:
    """The step's datasets in the shape `kind` needs, concatenated. `kind`: "sft" (messages, or
    prompt/completion, or text), "preference" (prompt, chosen, rejected) or "prompt"."""
    import datasets

    parts = []
    for ref in job.datasets:
        try:
            ds = datasets.load_from_disk(str(ref.path), keep_in_memory=True)  # no cache files in the export
        except Exception as exc:
            raise PluginError(f"{who} trainer: cannot load dataset {ref.path}: {type(exc).__name__}: {exc}") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise PluginError(f"{who} trainer: dataset {ref.path} has splits {list(ds)} but no 'train'")
            ds = ds["train"]
        parts.append(_shape(ds, ref.path, who, kind, extra))
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if ds.num_rows == 0:
        raise PluginError(
            f"{who} trainer: the dataset{'s' if len(parts) > 1 else ''} "
            f"{', '.join(str(r.path) for r in job.datasets)} ha{'ve' if len(parts) > 1 else 's'} no rows"
        )
    return ds


def _shape(ds: Any, path: Path, who: str, kind: str, extra: tuple[str, ...]) -> Any:
    cols = set(ds.column_names)

    def missing(column: str) -> PluginError:
        wanted, fmt = FORMATS[kind]
        return PluginError(
            f"{who} trainer: dataset {path} has no {column!r} column (it has: "
            f"{', '.join(sorted(cols)) or 'none'}); the {who} trainer reads {wanted}, "
            f"as an export stage with `format: {fmt}` writes"
        )

    if kind == "sft":
        for group in (("messages",), ("prompt", "completion"), ("text",)):
            if cols.issuperset(group):
                return ds.select_columns(list(group))
        raise missing("messages")
    if kind == "preference":
        for column in ("prompt", "chosen", "rejected", *extra):
            if column not in cols:
                raise missing(column)
        return ds.select_columns(["prompt", "chosen", "rejected", *extra])
    if "prompt" in cols:
        return ds.select_columns(["prompt"])
    if "messages" in cols:
        return ds.select_columns(["messages"]).map(
            lambda r: {"prompt": _prompt_of(r["messages"], who, path)}, remove_columns=["messages"]
        )
    raise missing("prompt")


def _last_assistant(messages: list[dict[str, str]]) -> int | None:
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "assistant"), None)


def _prompt_of(messages: list[dict[str, str]], who: str, path: Path) -> list[dict[str, str]]:
    i = _last_assistant(messages)
    prompt = messages if i is None else messages[:i]
    if not prompt:
        raise PluginError(f"{who} trainer: a conversation in {path} has no prompt before its assistant turn")
    return prompt


def to_prompt_completion(ds: Any, who: str, path: str) -> Any:
    """messages -> conversational prompt/completion (the last assistant turn is the completion),
    so TRL computes the loss on the completion only."""

    def split(row: dict[str, Any]) -> dict[str, Any]:
        messages = row["messages"]
        i = _last_assistant(messages)
        if i is None or i == 0:
            raise PluginError(f"{who} trainer: a conversation in {path} has no prompt and assistant answer")
        return {"prompt": messages[:i], "completion": [messages[i]]}

    return ds.map(split, remove_columns=["messages"])


# ----------------------------------------------------------------------------- models


def load_student(job: TrainJob, who: str, options: TrainOptions, head: str = "causal-lm") -> tuple[Any, Any]:
    import torch

    quantization = None
    if options.lora is not None and options.lora.quantize != "none":
        if job.hardware.device != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError(
                f"{who} trainer: lora.quantize={options.lora.quantize!r} needs a CUDA GPU and the "
                "bitsandbytes package; use quantize: none on this machine"
            )
        from transformers import BitsAndBytesConfig

        quantization = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
            if options.lora.quantize == "4bit"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
    # A frozen base under an adapter may sit in half precision; fully trained weights stay fp32
    # (mixed precision keeps fp32 master weights).
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(job.hardware.precision)
    dtype = half if options.lora is not None and half is not None else torch.float32
    model = load_model(job.student, who, head=head, dtype=dtype, quantization=quantization)
    tok = load_tokenizer(job.student, who)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def peft_config(options: TrainOptions, task_type: str = "CAUSAL_LM") -> Any:
    if options.lora is None:
        return None
    from peft import LoraConfig

    lo = options.lora
    return LoraConfig(
        r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=lo.target_modules, task_type=task_type
    )


# ----------------------------------------------------------------------------- config and run


def make_config(
    who: str, config_name: str, job: TrainJob, options: TrainOptions, specific: dict[str, Any], progress: bool = False
) -> Any:
    """The TRL config: distill's shared options, the hardware plan, the run's trackers, the
    trainer's own options, then `trl_args` (which win). A value TRL rejects is a ConfigError
    naming the trainer."""
    cls = import_trl(config_name)
    args: dict[str, Any] = {
        "output_dir": str(job.checkpoint_dir),
        "num_train_epochs": options.epochs,
        "max_steps": options.max_steps,
        "per_device_train_batch_size": options.batch_size,
        "gradient_accumulation_steps": options.gradient_accumulation_steps,
        "seed": options.seed,
        "logging_steps": options.logging_steps,
        "save_strategy": "steps",
        "save_steps": options.save_steps,
        "save_total_limit": options.save_total_limit,
        "disable_tqdm": not progress,
        **job.hardware.trl_args(),
        **job.tracking.trl_args(trl_config_fields(config_name)),
    }
    if options.learning_rate is not None:
        args["learning_rate"] = options.learning_rate
    args.update({k: v for k, v in specific.items() if v is not None})
    try:
        check_trl_args(config_name, options.trl_args)
    except ValueError as exc:
        raise ConfigError(f"{who} trainer: trl_args: {exc}") from None
    args.update(options.trl_args)
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{who} trainer: TRL {config_name} rejected the options: {exc}") from None


def run(trl_trainer: Any, job: TrainJob) -> Any:
    """Train, from the last complete checkpoint when a killed run left one."""
    if trl_trainer.args.disable_tqdm:  # no progress wanted: no log lines printed either
        from transformers.trainer_callback import PrinterCallback

        trl_trainer.remove_callback(PrinterCallback)
    if job.report is not None:
        trl_trainer.add_callback(progress_callback(job.report))
    resume = str(job.resume_from) if job.resume_from is not None else None
    return trl_trainer.train(resume_from_checkpoint=resume)


def progress_callback(report: Callable[[dict[str, Any]], None]) -> Any:
    """A TrainerCallback that tells the run each optimizer step and each logged loss."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            report({"step": state.global_step, "max_steps": state.max_steps})

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            report({"step": state.global_step, "max_steps": state.max_steps})

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and isinstance(logs.get("loss"), (int, float)):
                report({"loss": float(logs["loss"])})

    return Progress()


def finish(
    trl_trainer: Any,
    job: TrainJob,
    output: Any,
    options: TrainOptions,
    *,
    merge: bool,
    influences: list[tuple[str, str]] | None = None,
) -> TrainResult:
    """Save the adapter or the full weights (and merged weights when asked) as safetensors in
    `job.output_dir`, with the tokenizer; return the metrics."""
    out = job.output_dir
    adapter = options.lora is not None
    trl_trainer.save_model(str(out))  # main process only; the adapter alone when training one
    merged_path = None
    if adapter and merge:
        merged_path = out / "merged"
        if is_main_process():
            model = trl_trainer.model.merge_and_unload()
            model.save_pretrained(str(merged_path))
            trl_trainer.processing_class.save_pretrained(str(merged_path))
    history = list(trl_trainer.state.log_history)
    if is_main_process():
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; the options are in the lineage
        (out / "training_log.json").write_text(json.dumps(history, indent=1, default=str))
    losses = [h["loss"] for h in history if "loss" in h]
    metrics = {k: v for k, v in output.metrics.items() if isinstance(v, (int, float))}
    if losses:
        metrics["first_loss"], metrics["final_loss"] = float(losses[0]), float(losses[-1])
    tokens = [h["num_tokens"] for h in history if "num_tokens" in h]
    if tokens and metrics.get("train_runtime"):
        metrics["num_tokens"] = int(tokens[-1])
    # A merged folder is what later steps, the reward-model ranker and teachers load.
    return TrainResult(
        model_path=merged_path or out,
        metrics=metrics,
        global_step=int(trl_trainer.state.global_step),
        adapter=adapter,
        merged_path=merged_path,
        influences=list(influences or []),
    )
