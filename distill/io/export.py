"""Export records as a Hugging Face `datasets` folder in the shapes TRL trainers read.

`sft` is TRL's conversational language-modeling format (a `messages` column); `preference`
is its conversational preference format (`prompt`, `chosen`, `rejected`) for DPO-style
trainers. The folder is written beside the target and renamed into place, so an export that
is killed midway leaves either the previous dataset or none at `path`, never half of one.

The folder is what `Dataset.save_to_disk` writes (one Arrow IPC stream file, `state.json` and
`dataset_info.json`, the features also in the Arrow schema's metadata), written with pyarrow
directly: importing `datasets` (pandas, fsspec, huggingface_hub's API) costs well over a
second per run, more than the rest of a small export together, and the two formats' columns
are fixed. The tests read every export back with `datasets.load_from_disk` and `load_dataset`.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distill.errors import ConfigError, StoreError
from distill.records import Record

if TYPE_CHECKING:
    import pyarrow as pa

ExportFormat = Literal["sft", "preference"]

NO_RESPONSE = "no assistant response"
NO_PAIR = "no preference pair: needs two candidates with different scores"

#: Files `save_to_disk` writes; a folder with one of them is a dataset we may replace.
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass
class ExportResult:
    path: Path
    kept: list[Record] = field(default_factory=list)
    rejected: list[tuple[Record, str]] = field(default_factory=list)
    rows: int = 0


def export_records(records: Iterable[Record], fmt: ExportFormat, path: Path) -> ExportResult:
    """Write the rows `fmt` can express; the rest come back rejected with a reason.

    The kept records are the caller's own objects, so it can add events to them.
    """
    if fmt not in ("sft", "preference"):
        raise ValueError(f"unknown export format {fmt!r}; expected 'sft' or 'preference'")
    path = Path(path)
    result = ExportResult(path=path)
    rows: list[dict[str, Any]] = []
    for record in records:
        row, reason = _sft_row(record) if fmt == "sft" else _preference_row(record)
        if row is None:
            result.rejected.append((record, reason))
        else:
            rows.append(row)
            result.kept.append(record)
    _write(rows, fmt, path)
    result.rows = len(rows)
    return result


def _sft_row(record: Record) -> tuple[dict[str, Any] | None, str]:
    response = record.response()
    if response is None or not response.strip():
        return None, NO_RESPONSE
    return {"id": record.id, "messages": [m.model_dump() for m in record.messages]}, ""


def _preference_row(record: Record) -> tuple[dict[str, Any] | None, str]:
    pair = record.preference()
    if pair is None:
        return None, NO_PAIR
    return {
        "id": record.id,
        "prompt": [m.model_dump() for m in record.prompt()],
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
        "margin": pair.margin,
    }, ""


def _conversation() -> dict[str, Any]:
    return {
        "feature": {"role": {"dtype": "string", "_type": "Value"}, "content": {"dtype": "string", "_type": "Value"}},
        "_type": "List",
    }


#: Each format's columns as `datasets.Features.to_dict()` writes them: explicit, so an empty
#: export still has the columns a trainer expects.
FEATURES: dict[str, dict[str, Any]] = {
    "sft": {"id": {"dtype": "string", "_type": "Value"}, "messages": _conversation()},
    "preference": {
        "id": {"dtype": "string", "_type": "Value"},
        "prompt": _conversation(),
        "chosen": _conversation(),
        "rejected": _conversation(),
        "margin": {"dtype": "float64", "_type": "Value"},
    },
}
DATA_FILE = "data-00000-of-00001.arrow"


def _schema(features: dict[str, Any]) -> pa.Schema:
    import pyarrow as pa

    turn = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    types = {"string": pa.string(), "float64": pa.float64()}
    fields = [(name, turn if f["_type"] == "List" else types[f["dtype"]]) for name, f in features.items()]
    meta = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema(fields, metadata=meta)


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """The rows as a table of `schema`, through pyarrow's JSON reader: `pa.array` and
    `Table.from_pylist` import pandas (a third of a second) to ask whether rows are a DataFrame."""
    import pyarrow.json as pj

    lines = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    table = pj.read_json(io.BytesIO(lines), parse_options=options)
    return table.select(schema.names).replace_schema_metadata(schema.metadata)


def _write(rows: list[dict[str, Any]], fmt: ExportFormat, path: Path) -> None:
    try:
        import pyarrow as pa
    except ImportError:
        raise ConfigError("an export stage needs pyarrow: pip install 'distill[datasets]'") from None

    if path.exists() and not _replaceable(path):
        raise StoreError(f"export path {path} exists and is not a saved dataset; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    for stale in path.parent.iterdir():  # left by an export that was killed
        if stale.name.startswith(prefix):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    features = FEATURES[fmt]
    schema = _schema(features)
    try:
        tmp.mkdir()
        with pa.OSFile(str(tmp / DATA_FILE), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            if rows:  # an empty export is the schema alone
                writer.write_table(_table(rows, schema))
        info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
        state: dict[str, Any] = {
            "_data_files": [{"filename": DATA_FILE}],
            "_fingerprint": hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (tmp / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        _swap(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replaceable(path: Path) -> bool:
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    return any((path / m).exists() for m in _DATASET_MARKERS)


def _swap(tmp: Path, path: Path) -> None:
    """Rename into place; a non-empty folder cannot be renamed over, so move the old one aside first."""
    if not path.exists():
        tmp.rename(path)
        return
    old = path.with_name(f".{path.name}.tmp-old-{uuid.uuid4().hex[:8]}")
    path.rename(old)
    try:
        tmp.rename(path)
    except BaseException:
        old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)
