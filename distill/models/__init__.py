"""Model folders, the embedded default model, and which terms a model is under."""

from distill import deprecated
from distill.models.folders import (
    EMBEDDED,
    SAMPLING_FIELDS,
    library_bars_off,
    local_model_folder,
    model_identity,
    resolve_model_path,
    weight_files,
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
