"""Export records as a Hugging Face `datasets` folder in the shapes TRL trainers read.

`sft` is TRL's conversational language-modeling format (a `messages` column); `preference`
is its conversational preference format (`prompt`, `chosen`, `rejected`) for DPO-style
trainers. The folder is written beside the target and renamed into place, so an export that
is killed midway leaves either the previous dataset or none at `path`, never half of one.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distill.errors import StoreError
from distill.records import Record

if TYPE_CHECKING:
    import datasets

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
    _write(rows, _features(fmt), path)
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


def _features(fmt: ExportFormat) -> datasets.Features:
    """Explicit types, so an empty export still has the columns a trainer expects."""
    import datasets

    def conversation() -> list[dict[str, datasets.Value]]:
        return [{"role": datasets.Value("string"), "content": datasets.Value("string")}]

    if fmt == "sft":
        return datasets.Features({"id": datasets.Value("string"), "messages": conversation()})
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "prompt": conversation(),
            "chosen": conversation(),
            "rejected": conversation(),
            "margin": datasets.Value("float64"),
        }
    )


def _write(rows: list[dict[str, Any]], features: datasets.Features, path: Path) -> None:
    import datasets

    if path.exists() and not _replaceable(path):
        raise StoreError(f"export path {path} exists and is not a saved dataset; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    for stale in path.parent.iterdir():  # left by an export that was killed
        if stale.name.startswith(prefix):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    columns = {name: [row[name] for row in rows] for name in features}  # from_list loses columns when empty
    quiet = not datasets.utils.are_progress_bars_disabled()
    if quiet:  # the pipeline draws its own progress; tqdm lines would break it
        datasets.disable_progress_bars()
    try:
        ds = datasets.Dataset.from_dict(columns, features=features)
        # With no rows, save_to_disk would write zero shards, a folder load_from_disk cannot read.
        ds.save_to_disk(str(tmp), num_shards=None if rows else 1)
        _swap(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if quiet:
            datasets.enable_progress_bars()


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
