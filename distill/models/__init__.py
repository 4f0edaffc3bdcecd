"""Model folders, the embedded default model, and which terms a model is under."""

from distill import deprecated
from distill.models.folders import (
    EMBEDDED,
    SAMPLING_FIELDS,
    weight_files,
    resolve_model_path,
    local_model_folder,
    model_identity,
    library_bars_off,
)

__all__ = [
    "EMBEDDED",
    "SAMPLING_FIELDS",
    "weight_files",
    "resolve_model_path",
    "local_model_folder",
    "model_identity",
    "library_bars_off",
]

__getattr__ = deprecated.moved_names(__name__)
