"""The config's `tracking:` section: which experiment trackers a run reports to.

One setting for the whole run, not per train step, because a run has two kinds of figures and
both belong on one dashboard: the trainers' (loss, learning rate: TRL's own `report_to`) and
the pipeline's (each stage's counts, drop reasons, teacher requests and tokens). A step's
`trl_args: {report_to: ...}` still overrides it for that trainer alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from distill.config.stages import StrictModel
from distill.errors import suggest

#: The trackers transformers' Trainer (and so TRL) reports to, and the module each needs.
TRACKER_MODULES: dict[str, str] = {
    "tensorboard": "tensorboard",
    "trackio": "trackio",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "comet_ml": "comet_ml",
    "neptune": "neptune",
    "clearml": "clearml",
    "dagshub": "dagshub",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "azure_ml": "azureml",
    "codecarbon": "codecarbon",
    "flyte": "flytekit",
}
TRACKERS = ("none", *TRACKER_MODULES)


class TrackingSettings(StrictModel):
    report_to: list[str] = Field(
        default_factory=list,
        description="Trackers for the trainers' metrics and the stages' figures: one name or a "
        f"list of {', '.join(TRACKERS)}. TensorBoard writes under OUT/tensorboard/.",
    )
    run_name: str | None = Field(
        None, description="The run's name in the trackers (default: the output folder's name)."
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list):
            return value
        problems = [f"unknown tracker {n!r}{suggest(str(n), list(TRACKERS))}" for n in names if n not in TRACKERS]
        if problems:
            raise ValueError(f"{'; '.join(problems)}; known trackers: {', '.join(TRACKERS)}")
        if "none" in names and len(names) > 1:
            raise ValueError("'none' cannot be combined with other trackers")
        return [n for n in names if n != "none"]

    def missing_modules(self) -> list[str]:
        """`tracker (pip install X)` for each chosen tracker whose package is not installed."""
        import importlib.util

        missing = []
        for name in self.report_to:
            modules = ["tensorboard", "tensorboardX"] if name == "tensorboard" else [TRACKER_MODULES[name]]
            if all(importlib.util.find_spec(m) is None for m in modules):
                hint = "'distill[train]'" if name == "tensorboard" else TRACKER_MODULES[name]
                missing.append(f"{name} (pip install {hint})")
        return missing
