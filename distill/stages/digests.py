"""Stage digests: what decides whether a committed stage is still current, or must be redone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from distill.io.store import StageStore


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def output_digest(store: StageStore) -> str:
    """A stage's kept records, by the hashes of its committed shards."""
    return digest([s.sha256.get(s.kept_file) for s in store.manifest.shards])


def file_digest(path: Path) -> str:
    """A seed file's content (a folder: its files' names, sizes and times)."""
    if path.is_dir():
        return digest(
            sorted(
                (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in path.rglob("*")
                if p.is_file()
            )
        )
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return "unreadable"
    return h.hexdigest()[:16]
