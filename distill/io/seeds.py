"""Loading seed examples (JSONL, CSV, Parquet, a `datasets` folder) into records.

A seed file is user data, so a bad row must never cost the good ones: each malformed row
becomes a rejected record whose reason names its line (or row), and the pipeline counts it.
Only a file that cannot be opened or parsed at all is an error. Reasons read
`line 7: invalid JSON: ...` so the store can group them by the part after the position.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from distill.errors import ConfigError, SeedError, suggest
from distill.licenses import UNSPECIFIED, effective_tag, normalize
from distill.records import Event, Message, Provenance, Record, Source, stable_id

PROMPT_FIELDS = ("messages", "prompt", "instruction", "question", "input")
RESPONSE_FIELDS = ("response", "output", "answer", "completion")
SeedFormat = Literal["auto", "jsonl", "csv", "parquet", "hf"]

_SUFFIXES: dict[str, SeedFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_RAW_CHARS = 500
_MESSAGES = TypeAdapter(list[Message])
_SURROGATE = re.compile("[\udc80-\udcff]")


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


class _Reject(Exception):
    """A row-level problem: `str(exc)` is the reason after the position."""


@dataclass
class _Fields:
    prompt: str | None
    response: str | None
    system: str | None
    #: The prompt field was picked automatically (enables the alpaca instruction+input rule).
    auto_prompt: bool
    #: No column is an answer (`prompts_only`).
    no_response: bool = False


def load_seeds(src: SeedSource, base_dir: Path | None = None) -> SeedLoad:
    path = src.path if src.path.is_absolute() or base_dir is None else base_dir / src.path
    name = src.name or path.stem
    fmt = _format(src, path)
    expr = src.license or UNSPECIFIED
    out = SeedLoad()
    if src.license is None:
        out.warnings.append(
            f"seed set {name!r} ({path}) has no declared license: its records are tagged {UNSPECIFIED} "
            "(use: unspecified), so no dataset built from them can be cleared for release; "
            "set `license:` on the seed source to the SPDX expression it was published under"
        )
    fields = _Fields(src.prompt_field, src.response_field, src.system_field, src.prompt_field is None, src.prompts_only)
    unit = "line" if fmt in ("jsonl", "csv") else "row"
    skipped_columns: set[str] = set()
    seen = 0
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows, "hf": _hf_rows}[fmt](path, fields)
    try:
        for n, row, raw in rows:
            seen += 1
            try:
                if isinstance(row, _Reject):
                    raise row
                record = _record(row, n, name, expr, fields, skipped_columns)
            except _Reject as exc:
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


def _format(src: SeedSource, path: Path) -> SeedFormat:
    if not path.exists():
        raise SeedError(f"seed file not found: {path}")
    if src.format != "auto":
        if (src.format == "hf") != path.is_dir():
            want = "a folder written by datasets.save_to_disk" if src.format == "hf" else "a file"
            raise SeedError(f"seed path {path}: format {src.format!r} needs {want}")
        return src.format
    if path.is_dir():
        return "hf"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise SeedError(
            f"seed file {path}: cannot tell the format from the suffix {path.suffix!r}; "
            f"use one of {', '.join(_SUFFIXES)} or set `format:` (jsonl, csv, parquet, hf)"
        )
    return fmt


# --- readers: each yields (position, row dict or _Reject, raw text for the rejected record) ---

Row = tuple[int, dict[str, Any] | _Reject, str]


def _jsonl_rows(path: Path, fields: _Fields) -> Generator[Row, None, None]:
    """Decode line by line so one badly encoded line loses only itself."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise SeedError(f"cannot read seed file {path}: {exc.strerror or exc}") from None
    with f:
        for n, data in enumerate(f, 1):
            if n == 1 and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            if not data.strip():
                continue
            try:
                text = data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield n, _Reject(f"invalid UTF-8: byte {exc.start}: {exc.reason}"), _lossy(data)
                continue
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as exc:
                yield n, _Reject(f"invalid JSON: {_json_problem(exc)}"), text
                continue
            if not isinstance(value, dict):
                yield n, _Reject(f"not a JSON object: got {_json_type(value)}"), text
                continue
            yield n, value, text


def _csv_rows(path: Path, fields: _Fields) -> Generator[Row, None, None]:
    """Rows numbered by the file line they start on, the header being line 1."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SeedError(f"cannot read seed file {path}: {exc.strerror or exc}") from None
    # surrogateescape keeps the parse going past bad bytes; rows containing them are rejected below.
    text = data.decode("utf-8-sig", errors="surrogateescape")
    old_limit = csv.field_size_limit(2**31 - 1)  # long prompts exceed the 128 KiB default
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header: list[str] | None = None
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, _Reject(f"invalid CSV: {exc}"), ""
                continue
            if not cells:
                continue
            raw = ",".join(cells)
            if header is None:
                if any(_SURROGATE.search(c) for c in cells):
                    raise SeedError(f"seed file {path}: the header line is not valid UTF-8")
                header = cells
                dupes = sorted({h for h in header if header.count(h) > 1})
                if dupes:
                    raise SeedError(f"seed file {path}: duplicate column names {', '.join(dupes)}")
                _resolve_columns(path, header, fields)
                continue
            if any(_SURROGATE.search(c) for c in cells):
                yield start, _Reject("invalid UTF-8"), _lossy(raw.encode("utf-8", "surrogateescape"))
            elif len(cells) != len(header):
                yield start, _Reject(f"wrong number of fields: {len(cells)}, the header has {len(header)}"), raw
            else:
                yield start, dict(zip(header, cells)), raw
    finally:
        csv.field_size_limit(old_limit)


def _parquet_rows(path: Path, fields: _Fields) -> Generator[Row, None, None]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SeedError(f"reading {path} needs pyarrow: pip install 'distill[datasets]'") from None
    try:
        pf = pq.ParquetFile(path)
        _resolve_columns(path, list(pf.schema_arrow.names), fields)
        n = 0
        for batch in pf.iter_batches(batch_size=1000):
            for row in batch.to_pylist():
                yield n, row, _raw_row(row)
                n += 1
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise SeedError(f"cannot read parquet seed file {path}: {exc}") from None


def _hf_rows(path: Path, fields: _Fields) -> Generator[Row, None, None]:
    try:
        import datasets
    except ImportError:
        raise SeedError(f"reading {path} needs datasets: pip install 'distill[datasets]'") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:  # FileNotFoundError when the folder is no dataset
        raise SeedError(f"seed folder {path} is not a datasets.save_to_disk folder: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if len(splits) != 1:
            raise SeedError(
                f"seed folder {path} holds the splits {', '.join(splits)}; "
                f"point `path:` at one of them, e.g. {path / splits[0]}"
            )
        ds = ds[splits[0]]
    _resolve_columns(path, list(ds.column_names), fields)
    n = 0
    for batch in ds.iter(batch_size=1000):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns)):
            row = dict(zip(columns, values))
            yield n, row, _raw_row(row)
            n += 1


def _resolve_columns(path: Path, columns: list[str], fields: _Fields) -> None:
    """Tabular files have one set of columns: a wrong field name fails the load, not every row."""

    have = ", ".join(columns) or "none"
    for kind in ("prompt", "response", "system"):
        name = getattr(fields, kind)
        if name is not None and name not in columns:
            raise SeedError(
                f"seed file {path}: no column {name!r} for {kind}_field{suggest(name, columns)} (columns: {have})"
            )
    if fields.prompt is None:
        fields.prompt = next((c for c in PROMPT_FIELDS if c in columns), None)
        if fields.prompt is None:
            raise SeedError(
                f"seed file {path}: no prompt column (looked for {', '.join(PROMPT_FIELDS)}; "
                f"columns: {have}); set `prompt_field:`"
            )
    if fields.response is None and not fields.no_response:
        fields.response = next((c for c in RESPONSE_FIELDS if c in columns), None)


# --- rows to records ---


def _record(row: dict[str, Any], n: int, name: str, expr: str, fields: _Fields, skipped_columns: set[str]) -> Record:
    prompt_key = fields.prompt or next((k for k in PROMPT_FIELDS if row.get(k) is not None), None)
    if prompt_key is None or row.get(prompt_key) is None:
        looked = repr(prompt_key) if prompt_key else f"looked for {', '.join(PROMPT_FIELDS)}"
        raise _Reject(f"missing prompt field: {looked}")
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
            raise _Reject(f"invalid messages list: not JSON ({_json_problem(exc)})") from None
    if isinstance(value, list):
        messages = _messages(value, system, response)
    elif isinstance(value, str):
        prompt = value
        if fields.auto_prompt and prompt_key == "instruction" and isinstance(row.get("input"), str):
            used.add("input")  # alpaca: `input` is the material the instruction is about
            if row["input"].strip():
                prompt = f"{prompt}\n\n{row['input']}"
        if not value.strip():
            raise _Reject(f"empty prompt: field {prompt_key!r}")
        messages = [Message(role="user", content=prompt)]
        if system:
            messages.insert(0, Message(role="system", content=system))
        if response:
            messages.append(Message(role="assistant", content=response))
    else:
        raise _Reject(f"non-string content: field {prompt_key!r} is {_json_type(value)}")
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
        raise _Reject("invalid text: a \\uD800-\\uDFFF escape that is half a surrogate pair, not a character") from None
    return record


def _json_problem(exc: Exception) -> str:
    """One line for what json.loads refused: syntax, nesting past the recursion limit, a huge number."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(";")[0]


def _text(row: dict[str, Any], key: str | None, what: str) -> str | None:
    """An optional text field: absent, null or blank all mean "none" (CSV cannot say null)."""
    if key is None:
        return None
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject(f"non-string content: {what} field {key!r} is {_json_type(value)}")
    return value if value.strip() else None


def _messages(value: list[Any], system: str | None, response: str | None) -> list[Message]:
    # Arrow structs give every message every key seen in the column, unused ones as null.
    cleaned = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in value]
    try:
        messages = _MESSAGES.validate_python(cleaned)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise _Reject(f"invalid messages list: [{where}] {err['msg']}") from None
    if not any(m.role == "user" for m in messages):
        raise _Reject("invalid messages list: no user message")
    for i, m in enumerate(messages):
        if not m.content.strip():
            what = "empty prompt" if m.role == "user" else "invalid messages list"
            raise _Reject(f"{what}: message {i} ({m.role}) is empty")
    if system:
        if messages[0].role == "system":
            raise _Reject("invalid messages list: starts with a system message and a system field is also set")
        messages.insert(0, Message(role="system", content=system))
    if response:
        if messages[-1].role == "assistant":
            raise _Reject("invalid messages list: ends with an assistant reply and a response field is also set")
        messages.append(Message(role="assistant", content=response))
    return messages


def _rejected(n: int, unit: str, raw: str, name: str, expr: str, reason: str) -> Record:
    record = Record(
        id=stable_id("seed-rejected", name, n),
        messages=[],
        metadata={unit: n, "raw": raw[:_RAW_CHARS]},
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


def _json_type(v: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(v), type(v).__name__)


def _lossy(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").rstrip("\r\n")


def _raw_row(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str, ensure_ascii=False)[:_RAW_CHARS]
