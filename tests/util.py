"""Shared helpers for the core tests: seed files and configs in a temp folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from fake_plugins import EchoTeacher, FakePlugins

from distill.config.loader import parse_config
from distill.pipeline import Pipeline
from distill.registry import make_registry

QUESTIONS = [
    "How do I reset my Acme router to factory settings?",
    "Why is my Wi-Fi slow in the evening?",
    "How can I change the Wi-Fi password?",
    "What is the capital of France?",
    "Which channel should my 5 GHz network use?",
    "Can you recommend a good pasta recipe?",
]


def write_seeds(folder: Path, lines: list[str] | None = None, name: str = "seeds.jsonl") -> Path:
    if lines is None:
        lines = [json.dumps({"prompt": q}) for q in QUESTIONS]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def config_dict(folder: Path, **over: Any) -> dict[str, Any]:
    seeds = write_seeds(folder)
    cfg: dict[str, Any] = {
        "output": str(folder / "out"),
        "seed": 7,
        "cache": {"path": str(folder / "requests.sqlite")},
        "seeds": [{"path": str(seeds), "license": "CC0-1.0", "name": "acme-seeds"}],
        "teachers": {
            "writer": {"plugin": "echo", "options": {"n": 2}},
            "inventor": {"plugin": "echo", "options": {"style": "instructions"}},
        },
        "stages": [
            {
                "kind": "generate",
                "name": "instructions",
                "teacher": "inventor",
                "batch_size": 2,
                "task": {"plugin": "self-instruct", "options": {"num_instructions": 4}},
            },
            {
                "kind": "generate",
                "name": "responses",
                "teacher": "writer",
                "batch_size": 3,
                "task": {"plugin": "response", "options": {"system_prompt": "Be brief."}},
            },
            {
                "kind": "filter",
                "name": "clean",
                "batch_size": 4,
                "filters": [{"plugin": "length", "options": {"min_words": 2}}, "exact-dedup"],
            },
            {"kind": "export", "name": "sft", "format": "sft"},
        ],
    }
    cfg.update(over)
    return cfg


def registry(*extra: tuple[str, Any]):
    return make_registry(extra=[("fake", FakePlugins()), *extra])


def pipeline(cfg: dict[str, Any], *extra: tuple[str, Any]) -> Pipeline:
    EchoTeacher.calls.clear()
    return Pipeline(parse_config(cfg), registry(*extra), progress=False, log=lambda m: None)


def dump(folder: Path, cfg: dict[str, Any]) -> Path:
    p = folder / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def chromium() -> str | None:
    """The installed Chromium the browser tests drive (scripts/install.sh installs one, as root)."""
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None
