"""Loading seed examples (JSONL, CSV, Parquet, a `datasets` folder) into records.

A seed file is user data, so a bad row must never cost the good ones: each malformed row
becomes a rejected record whose reason names its line (or row), and the pipeline counts it.
Only a file that cannot be opened or parsed at all is an error. Reasons read
`line 7: invalid JSON: ...` so the store can group them by the part after the position.
The file formats are read in `distill.io.rows`; this module turns their rows into records.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from distill.errors import ConfigError
from distill.io.rows import (
    PROMPT_FIELDS,
    RAW_CHARS,
    RESPONSE_FIELDS,
    Fields,
    RowReject,
    SeedFormat,
    detect_format,
    json_problem,
    json_type,
    read_rows,
)
from distill.licenses import UNSPECIFIED, effective_tag, normalize
from distill.records import Event, Message, Provenance, Record, Source, stable_id

_MESSAGES = TypeAdapter(list[Message])


class SeedSource(BaseModel):
    """One `seeds:` entry of the config; validated at load time so a typo is a config error."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="JSONL, CSV or Parquet file, or a `datasets.save_to_disk` folder.")
    name: str | None = Field(None, description="Dataset name in provenance; defaults to the file or folder stem.")
    license: str | None = Field(None, description="SPDX expression the seeds are released under.")
    format: SeedFormat = Field("auto", description="`auto` picks from the suffix; a folder is `hf`.")
    prompt_field: str | None = Field(None, description=f"Default: first present of {', '.join(PROMPT_FIELDS)}.")
    response_field: str | None = Field(None, description=f"Default: first present of {', '.join(RESPONSE_FIELDS)}.")
    system_field: str | None = Field(None, description="Column holding a system prompt, if any.")
    prompts_only: bool = Field(
        False,
        description="Read prompts only: no column is read as an answer, so none of this set's "
        "answers reaches training (a run that learns from generated answers alone).",
    )
    limit: int | None = Field(None, ge=1, description="Stop after this many good seed records.")

    @field_validator("license")
    @classmethod
    def _valid_license(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize(value)
        except ConfigError as exc:  # pydantic only turns ValueError into a located error
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _default_name(self) -> SeedSource:
        if self.prompts_only and self.response_field is not None:
            raise ValueError("prompts_only reads no answer: remove response_field, or prompts_only")
        if self.name is None:
            self.name = self.path.stem or self.path.name or "seeds"
        return self


@dataclass
class SeedLoad:
    records: list[Record] = field(default_factory=list)
    rejected: list[Record] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_seeds(src: SeedSource, base_dir: Path | None = None) -> SeedLoad:
    path = src.path if src.path.is_absolute() or base_dir is None else base_dir / src.path
    name = src.name or path.stem
    fmt = detect_format(path, src.format)
    expr = src.license or UNSPECIFIED
    out = SeedLoad()
    if src.license is None:
        out.warnings.append(
            f"seed set {name!r} ({path}) has no declared license: its records are tagged {UNSPECIFIED} "
            "(use: unspecified), so no dataset built from them can be cleared for release; "
            "set `license:` on the seed source to the SPDX expression it was published under"
        )
    fields = Fields(src.prompt_field, src.response_field, src.system_field, src.prompt_field is None, src.prompts_only)
    unit = "line" if fmt in ("jsonl", "csv") else "row"
    skipped_columns: set[str] = set()
    seen = 0
    rows = read_rows(fmt, path, fields)
    try:
        for n, row, raw in rows:
            seen += 1
            try:
                if isinstance(row, RowReject):
                    raise row
                record = _record(row, n, name, expr, fields, skipped_columns)
            except RowReject as exc:
                out.rejected.append(_rejected(n, unit, raw, name, expr, str(exc)))
                continue
            out.records.append(record)
            if src.limit is not None and len(out.records) >= src.limit:
                break
    finally:
        rows.close()  # release the file now, not at garbage collection
    if not seen:
        out.warnings.append(f"seed file {path} has no rows: no seed records loaded")
    elif not out.records:
        out.warnings.append(f"seed file {path}: all {len(out.rejected)} rows were rejected; no seed records loaded")
    if skipped_columns:
        out.warnings.append(
            f"seed file {path}: columns {', '.join(sorted(skipped_columns))} hold values that "
            "are not JSON scalars and were not kept in metadata"
        )
    return out


# --- rows to records ---


def _record(row: dict[str, Any], n: int, name: str, expr: str, fields: Fields, skipped_columns: set[str]) -> Record:
    prompt_key = fields.prompt or next((k for k in PROMPT_FIELDS if row.get(k) is not None), None)
    if prompt_key is None or row.get(prompt_key) is None:
        looked = repr(prompt_key) if prompt_key else f"looked for {', '.join(PROMPT_FIELDS)}"
        raise RowReject(f"missing prompt field: {looked}")
    response_key = (
        None
        if fields.no_response
        else fields.response or next((k for k in RESPONSE_FIELDS if row.get(k) is not None), None)
    )
    used = {prompt_key, response_key, fields.system}
    system = _text(row, fields.system, "system")
    response = _text(row, response_key, "response")
    value = row[prompt_key]
    if prompt_key == "messages" and isinstance(value, str):
        try:  # CSV cells hold a messages list as JSON text
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise RowReject(f"invalid messages list: not JSON ({json_problem(exc)})") from None
    if isinstance(value, list):
        messages = _messages(value, system, response)
    elif isinstance(value, str):
        prompt = value
        if fields.auto_prompt and prompt_key == "instruction" and isinstance(row.get("input"), str):
            used.add("input")  # alpaca: `input` is the material the instruction is about
            if row["input"].strip():
                prompt = f"{prompt}\n\n{row['input']}"
        if not value.strip():
            raise RowReject(f"empty prompt: field {prompt_key!r}")
        messages = [Message(role="user", content=prompt)]
        if system:
            messages.insert(0, Message(role="system", content=system))
        if response:
            messages.append(Message(role="assistant", content=response))
    else:
        raise RowReject(f"non-string content: field {prompt_key!r} is {json_type(value)}")
    if fields.no_response:  # not even as a field: no seed answer may reach a later stage
        used.update(RESPONSE_FIELDS)
        while messages and messages[-1].role == "assistant":
            messages.pop()
    extra: dict[str, Any] = {}
    for k, v in row.items():
        if k in used:
            continue
        if _scalar(v):
            extra[k] = v
        else:
            skipped_columns.add(k)
    content = [m.model_dump() for m in messages]
    record = Record(
        id=stable_id("seed", name, n, content),
        messages=messages,
        metadata={"seed_row": n, **({"fields": extra} if extra else {})},
        provenance=Provenance(
            sources=[Source(dataset=name, row=n, license=expr)], events=[Event(stage="seeds", action="loaded")]
        ),
    )
    record.provenance.license = effective_tag(record)
    try:  # what cannot be written as UTF-8 JSON would fail the commit of every good row with it
        record.model_dump_json()
    except ValueError:
        raise RowReject(
            "invalid text: a \\uD800-\\uDFFF escape that is half a surrogate pair, not a character"
        ) from None
    return record


def _text(row: dict[str, Any], key: str | None, what: str) -> str | None:
    """An optional text field: absent, null or blank all mean "none" (CSV cannot say null)."""
    if key is None:
        return None
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowReject(f"non-string content: {what} field {key!r} is {json_type(value)}")
    return value if value.strip() else None


def _messages(value: list[Any], system: str | None, response: str | None) -> list[Message]:
    # Arrow structs give every message every key seen in the column, unused ones as null.
    cleaned = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in value]
    try:
        messages = _MESSAGES.validate_python(cleaned)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise RowReject(f"invalid messages list: [{where}] {err['msg']}") from None
    if not any(m.role == "user" for m in messages):
        raise RowReject("invalid messages list: no user message")
    for i, m in enumerate(messages):
        if not m.content.strip():
            what = "empty prompt" if m.role == "user" else "invalid messages list"
            raise RowReject(f"{what}: message {i} ({m.role}) is empty")
    if system:
        if messages[0].role == "system":
            raise RowReject("invalid messages list: starts with a system message and a system field is also set")
        messages.insert(0, Message(role="system", content=system))
    if response:
        if messages[-1].role == "assistant":
            raise RowReject("invalid messages list: ends with an assistant reply and a response field is also set")
        messages.append(Message(role="assistant", content=response))
    return messages


def _rejected(n: int, unit: str, raw: str, name: str, expr: str, reason: str) -> Record:
    record = Record(
        id=stable_id("seed-rejected", name, n),
        messages=[],
        metadata={unit: n, "raw": raw[:RAW_CHARS]},
        provenance=Provenance(
            sources=[Source(dataset=name, row=n, license=expr)],
            events=[Event(stage="seeds", action="dropped", reason=f"{unit} {n}: {reason}")],
        ),
    )
    record.provenance.license = effective_tag(record)
    return record


def _scalar(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return v is None or isinstance(v, (str, int, bool))
