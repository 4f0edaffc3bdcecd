"""Reading rows out of seed files: JSONL, CSV, Parquet, a Hugging Face save_to_disk folder.

Each reader yields `(position, row dict or RowReject, raw text)`, so a malformed row travels on
as a value and `distill.io.seeds` turns it into a rejected record; only a file that cannot be
opened or parsed at all raises. pyarrow and datasets are imported inside their readers, so
loading JSONL or CSV seeds never pays for them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distill.errors import SeedError, suggest

PROMPT_FIELDS = ("messages", "prompt", "instruction", "question", "input")
RESPONSE_FIELDS = ("response", "output", "answer", "completion")
SeedFormat = Literal["auto", "jsonl", "csv", "parquet", "hf"]

#: How much of a bad row a rejected record keeps: enough to find it, not a copy of a huge row.
RAW_CHARS = 500

_SUFFIXES: dict[str, SeedFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_SURROGATE = re.compile("[\udc80-\udcff]")


class RowReject(Exception):
    """A row-level problem: `str(exc)` is the reason after the position."""


@dataclass
class Fields:
    """Which columns hold what; the readers of tabular files fill in the ones left to pick."""

    prompt: str | None
    response: str | None
    system: str | None
    #: The prompt field was picked automatically (enables the alpaca instruction+input rule).
    auto_prompt: bool
    #: No column is an answer (`prompts_only`).
    no_response: bool = False


Row = tuple[int, dict[str, Any] | RowReject, str]


def detect_format(path: Path, requested: SeedFormat) -> SeedFormat:
    """Settle the format before reading, so a missing or mistyped path fails the load up front."""
    if not path.exists():
        raise SeedError(f"seed file not found: {path}")
    if requested != "auto":
        if (requested == "hf") != path.is_dir():
            want = "a folder written by datasets.save_to_disk" if requested == "hf" else "a file"
            raise SeedError(f"seed path {path}: format {requested!r} needs {want}")
        return requested
    if path.is_dir():
        return "hf"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise SeedError(
            f"seed file {path}: cannot tell the format from the suffix {path.suffix!r}; "
            f"use one of {', '.join(_SUFFIXES)} or set `format:` (jsonl, csv, parquet, hf)"
        )
    return fmt


def read_rows(fmt: SeedFormat, path: Path, fields: Fields) -> Generator[Row, None, None]:
    """The rows of a seed file; lazy, so nothing is opened until the caller iterates."""
    readers: dict[str, Callable[[Path, Fields], Generator[Row, None, None]]] = {
        "jsonl": _jsonl_rows,
        "csv": _csv_rows,
        "parquet": _parquet_rows,
        "hf": _hf_rows,
    }
    return readers[fmt](path, fields)


def _jsonl_rows(path: Path, fields: Fields) -> Generator[Row, None, None]:
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
                yield n, RowReject(f"invalid UTF-8: byte {exc.start}: {exc.reason}"), _lossy(data)
                continue
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as exc:
                yield n, RowReject(f"invalid JSON: {json_problem(exc)}"), text
                continue
            if not isinstance(value, dict):
                yield n, RowReject(f"not a JSON object: got {json_type(value)}"), text
                continue
            yield n, value, text


def _csv_rows(path: Path, fields: Fields) -> Generator[Row, None, None]:
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
                yield start, RowReject(f"invalid CSV: {exc}"), ""
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
                yield start, RowReject("invalid UTF-8"), _lossy(raw.encode("utf-8", "surrogateescape"))
            elif len(cells) != len(header):
                yield start, RowReject(f"wrong number of fields: {len(cells)}, the header has {len(header)}"), raw
            else:
                yield start, dict(zip(header, cells)), raw
    finally:
        csv.field_size_limit(old_limit)


def _parquet_rows(path: Path, fields: Fields) -> Generator[Row, None, None]:
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


def _hf_rows(path: Path, fields: Fields) -> Generator[Row, None, None]:
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


def _resolve_columns(path: Path, columns: list[str], fields: Fields) -> None:
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


def json_problem(exc: Exception) -> str:
    """One line for what json.loads refused: syntax, nesting past the recursion limit, a huge number."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(";")[0]


def json_type(v: Any) -> str:
    """A value's kind in JSON words, since the user wrote JSON (or CSV), not Python."""
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
    return json.dumps(row, default=str, ensure_ascii=False)[:RAW_CHARS]
