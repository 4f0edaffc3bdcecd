"""Comparing cache keys path by path, for `distill cache explain`.

A miss is explained by the nearest cached key and the dotted paths where the two differ
(`sampling.max_tokens: 256 -> 512`), so a user can see why a whole cache stopped matching.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

#: Long strings are shown this many characters around their first difference.
CLIP = 80


class FieldDiff(BaseModel):
    path: str
    change: Literal["changed", "added", "removed"]
    cached: Any = None
    new: Any = None


class MissExplanation(BaseModel):
    key: str
    model: str | None
    #: When the miss was recorded; None for `explain_key`.
    time: float | None = None
    nearest_key: str | None = None
    nearest_model: str | None = None
    differences: list[FieldDiff] = []
    note: str | None = None


ABSENT = object()


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaves, the way a user reads a config: `request.messages[1].content`."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and obj:
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


def _leaf_eq(a: Any, b: Any) -> bool:
    # 256 and 256.0, or 1 and true, hash to different keys, so they must show as different.
    return a is b or (type(a) is type(b) and a == b)


def diff_paths(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [p for p in sorted(old.keys() | new.keys()) if not _leaf_eq(old.get(p, ABSENT), new.get(p, ABSENT))]


def _clip(a: str, b: str) -> tuple[str, str]:
    """Long strings shown around their first difference: their shared start explains nothing."""
    if len(a) <= CLIP and len(b) <= CLIP:
        return a, b
    common = 0
    for x, y in zip(a, b):
        if x != y:
            break
        common += 1
    start = max(0, common - 20)

    def one(s: str) -> str:
        part = s[start : start + CLIP]
        return ("…" if start else "") + part + ("…" if start + CLIP < len(s) else "")

    return one(a), one(b)


def field_diff(path: str, old: Any, new: Any) -> FieldDiff:
    clipped = _clip(old if isinstance(old, str) else "", new if isinstance(new, str) else "")
    cached, fresh = (c if isinstance(v, str) else None if v is ABSENT else v for c, v in zip(clipped, (old, new)))
    change = "added" if old is ABSENT else "removed" if new is ABSENT else "changed"
    return FieldDiff(path=path, change=change, cached=cached, new=fresh)
