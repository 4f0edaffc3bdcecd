"""Local model folders: one identity for the same weights whichever engine runs them."""

from __future__ import annotations

import pytest

from distill.errors import PluginError
from distill.models.folders import local_model_folder, model_identity, resolve_model_path, weight_files
from distill.seeding import derive_seed


def test_derive_seed_is_stable_and_fits_the_width():
    assert derive_seed(7, "hi") == derive_seed(7, "hi") != derive_seed(7, "ho")
    assert 0 <= derive_seed(1, 2, bits=31) < 2**31
    assert derive_seed(1, 2, bits=31) == derive_seed(1, 2) & (2**31 - 1)


def test_relative_folders_resolve_against_the_config_folder(tmp_path):
    assert resolve_model_path("models/m", tmp_path) == str(tmp_path / "models/m")
    assert resolve_model_path("/abs/m", tmp_path) == "/abs/m"
    assert resolve_model_path("embedded", tmp_path) == "embedded"


def test_bad_folders_are_named_with_the_plugin(tmp_path):
    with pytest.raises(PluginError, match="^vllm teacher: model folder .* does not exist"):
        local_model_folder(str(tmp_path / "nope"), "vllm")
    with pytest.raises(PluginError, match=r"my-engine teacher: .* \(no config.json\)"):
        local_model_folder(str(tmp_path), "my-engine")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PluginError, match="no weight files"):
        local_model_folder(str(tmp_path), "transformers")


def test_identity_hashes_weights_and_a_changed_shard_shows(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"a")
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"b")
    (tmp_path / "ignored.bin").write_bytes(b"c")  # safetensors win over .bin
    assert [p.name for p in weight_files(tmp_path)] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    first = model_identity(str(tmp_path), "transformers")
    assert first.license == "LicenseRef-Unspecified" and first.model == tmp_path.name
    assert model_identity(str(tmp_path), "vllm", license="MIT").file_hash == first.file_hash
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"B")
    assert model_identity(str(tmp_path), "transformers").file_hash != first.file_hash
