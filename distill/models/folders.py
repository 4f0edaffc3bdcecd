"""Local model folders: finding them, and naming exactly which weights they hold.

Every teacher that runs a local model (transformers, vLLM, a user's own) must record the
same identity for the same folder, so that a dataset's provenance names the weights and not
the engine that ran them, and so that the request cache is shared between engines only when
the weights really are the same. This module is that one definition. It imports no ML
library: the embedded model is converted lazily, inside `local_model_folder`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distill.errors import PluginError
from distill.licenses import UNSPECIFIED, registry
from distill.models.embedded import (
    EMBEDDED,
    EMBEDDED_LICENSE,
    EMBEDDED_MODEL_ID,
    embedded_revision,
    ensure_converted,
    file_hash,
    gguf_path,
    read_marker,
)
from distill.models.metadata import own_license
from distill.teacher import ModelInfo

#: The options every local teacher shares that change what it samples (and so the cache key).
SAMPLING_FIELDS = frozenset({"n", "temperature", "top_p", "max_tokens", "seed"})
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


def weight_files(folder: Path) -> list[Path]:
    """The folder's weight files of the first format present, sorted (shards in order)."""
    for pattern in _WEIGHT_PATTERNS:
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if found:
            return found
    return []


def resolve_model_path(model: str, base_dir: Path) -> str:
    """A relative folder is relative to the config file, not to wherever distill was run."""
    if model == EMBEDDED:
        return model
    path = Path(model).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def local_model_folder(model: str, plugin: str, progress: bool = True) -> Path:
    """The checked folder for `model`; the embedded model is converted (once) on first need.
    Errors name the plugin, so a config with two local teachers says which one is wrong."""
    if model == EMBEDDED:
        return ensure_converted(progress=progress)
    path = Path(model).expanduser()
    if not path.is_dir():
        raise PluginError(
            f"{plugin} teacher: model folder {path} does not exist "
            f"(set `model` to 'embedded' or to a local model folder)"
        )
    if not (path / "config.json").is_file():
        raise PluginError(f"{plugin} teacher: {path} is not a Hugging Face model folder (no config.json)")
    if not weight_files(path):
        raise PluginError(f"{plugin} teacher: no weight files (*.safetensors, *.bin) in {path}")
    return path


def model_identity(
    model: str, plugin: str, license: str | None = None, revision: str | None = None, progress: bool = True
) -> ModelInfo:
    """Id, revision, sha256 of the weights and license, without loading the weights.

    A folder's id, revision and license come from its `distill-model.json` marker when it has
    one (options win); a sharded checkpoint's hash is that of a sha256sum-style manifest of
    its shards, so any changed shard shows.
    """

    if model == EMBEDDED:
        # The GGUF file is what was published and licensed; the fp32 folder derives from it.
        return ModelInfo(
            model=EMBEDDED_MODEL_ID,
            revision=revision or embedded_revision(),
            file_hash=file_hash(gguf_path()),
            license=license or EMBEDDED_LICENSE,
        )
    folder = local_model_folder(model, plugin, progress)
    marker = read_marker(folder) or {}
    return ModelInfo(
        model=str(marker.get("model") or folder.resolve().name),
        revision=revision or _str_or_none(marker.get("revision")),
        file_hash=weights_digest(folder),
        license=license
        or _str_or_none(marker.get("license"))
        or own_license(str(folder), folder, registry())
        or UNSPECIFIED,
    )


def weights_digest(folder: Path) -> str:
    """sha256 of the folder's weights: of the file itself, or of a sha256sum-style manifest of a
    sharded checkpoint's shards, so any changed shard shows."""
    digests = [(w.name, file_hash(w)) for w in weight_files(folder)]
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256("".join(f"{d}  {n}\n" for n, d in digests).encode()).hexdigest()


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@contextmanager
def library_bars_off() -> Iterator[None]:
    """transformers' weight-loading and datasets' map bars, a dozen per step, say nothing a user
    needs and bury the stage table; the training bar (TRL's own, off with `disable_tqdm`) stays."""
    from transformers.utils import logging as hf_logging

    try:
        import datasets
    except ImportError:  # pragma: no cover - the trainers need it
        datasets = None
    hf_on = hf_logging.is_progress_bar_enabled()
    ds_on = datasets is not None and not datasets.utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    if ds_on:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hf_on:
            hf_logging.enable_progress_bar()
        if ds_on:
            datasets.enable_progress_bars()


def resolve_student(model: str, base_dir: Path, who: str, role: str = "student") -> Path:
    """A model folder (full weights or a PEFT adapter) or "embedded"; clear errors otherwise."""

    if model == EMBEDDED:
        return ensure_converted(progress=False)
    path = Path(model).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_dir():
        raise PluginError(
            f"{who} trainer: {role} model folder {path} does not exist "
            f"(set `{role}` to a local model folder or 'embedded')"
        )
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise PluginError(
            f"{who} trainer: {path} is not a Hugging Face model folder (no config.json or adapter_config.json)"
        )
    if not weight_files(path):
        raise PluginError(f"{who} trainer: no weight files (*.safetensors, *.bin) in {role} folder {path}")
    return path
