"""Trainers: what a trainer plugin receives and returns.

A trainer plugin (registered with `register_trainers`) fine-tunes a student on exported
datasets: `train(job) -> TrainResult`. The core owns what every training run must have, so no
trainer can forget it: precision and gradient checkpointing chosen from the machine
(`plan_hardware`), resume from the last *complete* checkpoint, a finished step that is not
trained twice (`distill.training.chain.train_chain`), and the student's lineage and card
(`distill.training.lineage`). Nothing here imports torch or TRL at module level.

`python -m distill.training job.json` runs a chain from a JSON job file, also under
`accelerate launch` (see `distill.training.chain`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from distill import deprecated
from distill.layout import CHECKPOINTS, TRAIN_STATE
from distill.plugin import Options, Plugin
from distill.records import LicenseTag

#: TRL config fields distill sets itself; `trl_args` may not override them.
MANAGED_TRL_ARGS = frozenset({"output_dir", "resume_from_checkpoint"})
#: 0.1.0 name of `distill.layout.TRAIN_STATE`.
STATE_FILE = TRAIN_STATE


# ----------------------------------------------------------------------------- options


class LoraOptions(Options):
    """A LoRA adapter through PEFT instead of full fine-tuning (`lora: {}` for the defaults)."""

    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = Field("all-linear", description="Module names, or 'all-linear'.")
    quantize: Literal["none", "4bit", "8bit"] = Field(
        "none", description="QLoRA: load the frozen base quantised (needs bitsandbytes and a CUDA GPU)."
    )


class TrainOptions(Options):
    """Options every trainer shares. A trainer's own Options subclass names its TRL config
    class in `trl_config`; `trl_args` may set any field of that class, and no other."""

    trl_config: ClassVar[str] = ""

    epochs: float = Field(1.0, gt=0, description="Passes over the data (ignored when max_steps is set).")
    max_steps: int = Field(-1, description="Optimizer steps to run; -1 runs `epochs`.")
    batch_size: int = Field(8, ge=1, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float | None = Field(None, gt=0, description="Default: the TRL trainer's own.")
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="'auto' chooses from the machine (never from library defaults)."
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="'auto' turns it on only when the model would not fit in memory otherwise."
    )
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps; a killed run resumes from the last.")
    save_total_limit: int | None = Field(2, ge=1, description="Checkpoints kept while training.")
    keep_checkpoints: bool = Field(False, description="Keep checkpoints after the step finished.")
    logging_steps: int = Field(10, ge=1)
    lora: LoraOptions | None = Field(None, description="Train a LoRA adapter instead of all weights.")
    merge: bool | None = Field(
        None, description="With lora: also write merged full weights in `merged/` (default: the trainer's choice)."
    )
    trl_args: dict[str, Any] = Field(
        default_factory=dict, description="Any other field of the TRL config class, passed as is."
    )

    @field_validator("lora", mode="before")
    @classmethod
    def _lora_shorthand(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("trl_args")
    @classmethod
    def _known_trl_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_trl_args(cls.trl_config, value)
        return value


def trl_config_fields(config: str) -> set[str] | None:
    """Field names of `trl.<config>` in the installed TRL, or None when TRL is not installed."""
    import importlib.util

    if not config or importlib.util.find_spec("trl") is None:
        return None
    import dataclasses

    return {f.name for f in dataclasses.fields(import_trl(config))}


def check_trl_args(config: str, args: dict[str, Any]) -> None:
    """Raise ValueError naming each key the installed TRL's `config` class does not accept."""
    if not args:
        return
    managed = sorted(k for k in args if k in MANAGED_TRL_ARGS)
    if managed:
        raise ValueError(f"{', '.join(managed)}: set by distill, not in trl_args")
    fields = trl_config_fields(config)
    if fields is None:
        return  # checked again when training, where missing TRL is the error
    problems = []
    for key in args:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key!r} is not an option of {config} in TRL {_trl_version()}{hint}")
    if problems:
        raise ValueError("; ".join(problems))


def import_trl(name: str | None = None) -> Any:
    """`trl`, or `trl.<name>` (TRL's modules load lazily, on first attribute access)."""
    import warnings

    with warnings.catch_warnings():  # TRL warns at import about any vLLM version it has not tested
        warnings.filterwarnings("ignore", message=".*TRL currently supports vLLM.*")
        import trl

        return getattr(trl, name) if name else trl


def _trl_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("trl")
    except metadata.PackageNotFoundError:
        return "(not installed)"


# ----------------------------------------------------------------------------- the API


@dataclass(frozen=True)
class DatasetRef:
    """An exported dataset folder (`datasets.save_to_disk`). `license` is the combined tag of
    the records exported into it; without one, a `distill-dataset.json` in the folder is read,
    and failing that the data counts as unspecified."""

    path: Path
    name: str | None = None
    license: LicenseTag | None = None


@dataclass(frozen=True)
class Hardware:
    """What `plan_hardware` chose and why; recorded in the student's lineage."""

    device: str
    description: str
    precision: str
    gradient_checkpointing: bool
    reasons: tuple[str, ...] = ()
    #: Training processes (`accelerate launch --num_processes N` sets WORLD_SIZE).
    processes: int = 1

    def trl_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "use_cpu": self.device == "cpu",
            "bf16": self.precision == "bf16",
            "fp16": self.precision == "fp16",
            "gradient_checkpointing": self.gradient_checkpointing,
        }
        if self.device == "cpu":
            args["dataloader_pin_memory"] = False
        if self.processes > 1:  # every parameter of a causal LM is used: skip DDP's extra graph walk
            args["ddp_find_unused_parameters"] = False
        return args


@dataclass(frozen=True)
class Tracking:
    """Where a trainer reports its metrics: TRL's `report_to` and `run_name`, from the config's
    `tracking:`, and the folder TensorBoard writes in, under the run's output folder (a step's
    `trl_args` may still choose other trackers; their logs land there too)."""

    report_to: tuple[str, ...] = ()
    run_name: str | None = None
    logging_dir: Path | None = None

    def for_step(self, step: str) -> Tracking:
        """The chain's settings for one of its steps: its own run name and folder."""
        return Tracking(
            self.report_to,
            f"{self.run_name}/{step}" if self.run_name else None,
            self.logging_dir / step if self.logging_dir is not None else None,
        )

    def trl_args(self, fields: set[str] | None = None) -> dict[str, Any]:
        """The TRL config's fields; `logging_dir` only where the installed TRL still has it
        (newer transformers read `TENSORBOARD_LOGGING_DIR`, see `environment`)."""
        args: dict[str, Any] = {"report_to": list(self.report_to) or "none"}
        if self.run_name:
            args["run_name"] = self.run_name
        if self.logging_dir is not None and fields and "logging_dir" in fields:
            args["logging_dir"] = str(self.logging_dir)
        return args

    def environment(self) -> dict[str, str]:
        return {"TENSORBOARD_LOGGING_DIR": str(self.logging_dir)} if self.logging_dir is not None else {}


@dataclass
class TrainJob:
    """Everything a trainer needs for one step."""

    #: Model folder to start from: a full model, or an adapter folder (merged when loaded).
    student: Path
    datasets: list[DatasetRef]
    #: The step's output folder: the trained weights (or adapter) go here, at its top level.
    output_dir: Path
    hardware: Hardware
    #: The last complete checkpoint of a killed run of this very step, or None.
    resume_from: Path | None = None
    #: Earlier steps' outputs by step name, for options that name one (a reward model, a teacher).
    outputs: dict[str, Path] = field(default_factory=dict)
    #: Where the trainer's metrics go besides `training_log.json` (the config's `tracking:`).
    tracking: Tracking = field(default_factory=Tracking)
    #: Tell the run how far training is (`step`, `max_steps`, `loss`): printed at the run's log
    #: interval where stderr is not a terminal. None: nobody is listening.
    report: Callable[[dict[str, Any]], None] | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / CHECKPOINTS


@dataclass
class TrainResult:
    #: The folder a later step or an evaluator loads (full weights, or the adapter).
    model_path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    global_step: int = 0
    adapter: bool = False
    merged_path: Path | None = None
    resumed_from: str | None = None
    #: Other models whose outputs shaped the student: (role, folder), e.g. ("teacher", path).
    influences: list[tuple[str, str]] = field(default_factory=list)
    #: True when the step had finished in an earlier run and was not trained again.
    skipped: bool = False
    #: Filled by the chain: the hardware plan the step ran with.
    hardware: Hardware | None = None


class Trainer(Plugin):
    """Trains a student on exported datasets; `train` writes its weights into `job.output_dir`."""

    Options: ClassVar[type[Options]] = TrainOptions
    options: TrainOptions
    requires = ("train",)
    #: Export formats the trainer reads: "sft" (messages), "preference" (prompt/chosen/rejected).
    formats: ClassVar[tuple[str, ...]] = ("sft",)
    #: What it produces: "causal-lm", or "reward" (a one-logit sequence classifier).
    produces: ClassVar[str] = "causal-lm"

    def train(self, job: TrainJob) -> TrainResult:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class TrainStep:
    trainer: Trainer
    datasets: list[DatasetRef]
    name: str
    #: None: the previous step's output (the chain's student for the first step); the name of
    #: an earlier step; or a model folder / "embedded".
    student: str | None = None


# ----------------------------------------------------------------------------- helpers for trainer plugins


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


__getattr__ = deprecated.moved_names(__name__)
