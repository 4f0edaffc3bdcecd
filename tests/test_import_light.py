"""`import distill` (and the CLI's start) must not pull in heavy ML libraries."""

from __future__ import annotations

import os
import subprocess
import sys

HEAVY = ["torch", "vllm", "transformers", "trl", "peft", "openai", "ray", "datasets", "huggingface_hub"]


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_distill_is_light():
    assert _loaded_after("import distill") == []


def test_core_modules_and_plugin_discovery_are_light():
    code = (
        "import distill.cli.app, distill.pipeline, distill.config.loader, distill.io.seeds, distill.io.export, "
        "distill.registry, distill.io.inspect\nfrom distill.registry import make_registry\nmake_registry()"
    )
    assert _loaded_after(code) == []


def test_first_party_plugins_are_not_a_bare_top_level_package(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", "import plugins"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.returncode != 0 and "No module named 'plugins'" in out.stderr
