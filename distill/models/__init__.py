"""Model folders, the embedded default model, and which terms a model is under."""

from distill.models.folders import (
    EMBEDDED,
    SAMPLING_FIELDS,
    derive_seed,
    weight_files,
    resolve_model_path,
    local_model_folder,
    model_identity,
    library_bars_off,
)

__all__ = [
    "EMBEDDED",
    "SAMPLING_FIELDS",
    "derive_seed",
    "weight_files",
    "resolve_model_path",
    "local_model_folder",
    "model_identity",
    "library_bars_off",
]
