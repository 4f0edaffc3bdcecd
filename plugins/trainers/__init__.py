"""First-party trainers on TRL and PEFT: SFT, reward model, DPO, GRPO, on-policy distillation,
context distillation.

Each is a plugin registered like any third-party one; `distill.trainer.train_chain` runs them
in order, each starting from the previous one's output. Importing this module is light: TRL,
PEFT and torch are imported when a trainer trains.
"""

from __future__ import annotations

from distill.hookspecs import hookimpl
from distill_plugins.trainers._context import ContextDistillationTrainer
from distill_plugins.trainers._online import DistillationTrainer, GRPOTrainer
from distill_plugins.trainers._sft import DPOTrainer, RewardModelTrainer, SFTTrainer

__all__ = [
    "SFTTrainer",
    "RewardModelTrainer",
    "DPOTrainer",
    "GRPOTrainer",
    "DistillationTrainer",
    "ContextDistillationTrainer",
]


@hookimpl
def register_trainers(register) -> None:
    for cls in (
        SFTTrainer,
        RewardModelTrainer,
        DPOTrainer,
        GRPOTrainer,
        DistillationTrainer,
        ContextDistillationTrainer,
    ):
        register(cls)
