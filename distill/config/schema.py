"""JSON Schemas generated from the pydantic models, checked in under `schemas/`.

Editors validate configs against them and other tools read records with them; a test fails
when the checked-in files drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.config.loader import Config
from distill.licenses import Registry
from distill.records import Record

SCHEMAS = ("record", "config", "licenses")


def schema(name: str) -> dict[str, Any]:
    if name == "record":
        out = Record.model_json_schema()
        out["title"] = "distill record"
    elif name == "config":
        out = Config.model_json_schema()
        out["title"] = "distill config"
    elif name == "licenses":
        out = Registry.model_json_schema()
        out["title"] = "distill license registry"
    else:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMAS)}")
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return out


def render(name: str) -> str:
    return json.dumps(schema(name), indent=2, sort_keys=True) + "\n"


def write_all(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SCHEMAS:
        p = folder / f"{name}.schema.json"
        p.write_text(render(name))
        paths.append(p)
    return paths
