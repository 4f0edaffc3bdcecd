"""Turning pydantic validation errors into messages a person can act on.

`filters[2].treshold: unknown key (did you mean 'threshold'?)` instead of a pydantic dump:
the path uses the user's own words (list indices, no union tags) and unknown keys get a
suggestion from the fields that are valid at that exact place.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from distill.errors import suggest


def _unwrap(tp: Any) -> Any:
    """Strip Annotated/Optional wrappers."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
            else:
                return tp
        else:
            return tp


def _union_members(tp: Any) -> list[type[BaseModel]]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [
            a for a in (_unwrap(x) for x in typing.get_args(tp)) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
    return []


def _tag_member(tp: Any, key: str) -> type[BaseModel] | None:
    for m in _union_members(tp):
        f = m.model_fields.get("kind")
        if f is not None and key in typing.get_args(f.annotation):
            return m
    return None


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """Render `loc` as the user's path and find the model at its parent (for suggestions)."""
    path = ""
    current: Any = model
    parent_model: type[BaseModel] | None = model
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(part, int):
            path += f"[{part}]"
            origin = typing.get_origin(_unwrap(current))
            args = typing.get_args(_unwrap(current))
            current = args[0] if origin in (list, tuple) and args else None
            continue
        tagged = _tag_member(current, str(part)) if current is not None else None
        if tagged is not None:  # a discriminator tag pydantic puts in the path
            current = tagged
            parent_model = tagged
            continue
        path += f".{part}" if path else str(part)
        base = _unwrap(current)
        if isinstance(base, type) and issubclass(base, BaseModel):
            parent_model = base
            field = base.model_fields.get(str(part))
            current = field.annotation if field else None
        elif typing.get_origin(base) is dict:
            args = typing.get_args(base)
            current = args[1] if len(args) == 2 else None
        else:
            current = None
        if not last:
            inner = _unwrap(current)
            parent_model = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
    return path, parent_model


def format_validation_error(
    exc: ValidationError, model: type[BaseModel], *, prefix: str = "", source: Path | None = None, header: bool = True
) -> str:
    lines: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path, parent = _walk(model, loc)
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else f"{prefix}{path}"
        if err["type"] == "extra_forbidden":
            hint = suggest(str(loc[-1]), list(parent.model_fields)) if parent else ""
            msg = f"unknown key{hint}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "union_tag_invalid":
            msg = err["msg"]
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            got = err.get("input")
            if err["type"] not in ("value_error", "assertion_error") and isinstance(got, (str, int, float, bool)):
                msg += f" (got {got!r})"
        lines.append(f"{path or '(top level)'}: {msg}")
    if not header:
        return "\n  ".join(lines)
    where = f" in {source}" if source else ""
    return f"invalid config{where}:\n" + "\n".join(f"  {line}" for line in lines)
