"""Benchmark decontamination: drop records that share an n-gram with an evaluation set.

As in lm-eval-harness and the GPT-3 paper, text is lower-cased, stripped of punctuation and
split on whitespace, and a record is contaminated when any of its 13-grams occurs in an
evaluation item. The evaluation sets are named in the options (public benchmarks, or the
project's own held-out prompts: just another path) and indexed once, in `setup`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.errors import PluginError
from distill.filter import KEEP, Decision, Drop, Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options, PluginContext
from distill.records import Record
from distill_plugins.filters._text import MissingField, TextField, field_text, normalize

EvalFormat = Literal["auto", "jsonl", "csv", "parquet", "hf"]
_SUFFIXES: dict[str, EvalFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class EvalSet(BaseModel):
    """One evaluation set to keep out of the training data."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(
        description="JSONL, CSV or Parquet file, or a `datasets.save_to_disk` folder; "
        "relative to the config file's folder."
    )
    name: str | None = Field(None, description="Name used in drop reasons; defaults to the file or folder stem.")
    fields: list[str] | None = Field(
        None,
        description="Fields holding text to match; default: every text "
        "field (strings, lists of strings, message lists).",
    )
    format: EvalFormat = Field("auto", description="`auto` picks from the suffix; a folder is `hf`.")

    @model_validator(mode="after")
    def _default_name(self) -> EvalSet:
        if self.name is None:
            self.name = self.path.stem or self.path.name
        return self


class Decontamination(Filter):
    """Drop records sharing an n-gram with any item of the named evaluation sets.

    An evaluation text shorter than `n` tokens has no n-gram at all, so a plain n-gram
    index could never find it: short questions ("What is the boiling point of water at sea
    level?") would slip through however verbatim they were copied. Such texts are matched
    whole instead, as one shorter gram that must appear contiguously in the record. Texts
    shorter than `min_tokens` are skipped: a two-word answer ("New York") is no evidence of
    contamination and would match every record that mentions it.
    """

    name = "decontamination"

    class Options(Options):
        eval_sets: list[EvalSet] = Field(min_length=1, description="Evaluation sets to check against.")
        n: int = Field(13, ge=1, description="n-gram length in tokens (13 as in lm-eval and GPT-3).")
        min_tokens: int = Field(
            8, ge=1, description="Evaluation texts with fewer tokens are not indexed (8: GPT-3's smallest n)."
        )
        field: TextField = Field("both", description="Check the prompt, the response, or both.")

    def __init__(self, options=None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._grams: dict[int, int] | None = None
        #: Whole short texts by their length in tokens: length -> hash -> reference.
        self._short: dict[int, dict[int, int]] = {}
        #: (eval set, item, normalised text) per indexed text; grams refer to these.
        self._texts: list[tuple[str, int, str]] = []

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        self.build_index(context.base_dir)

    def build_index(self, base_dir: Path) -> None:
        """Hash every n-gram of every evaluation text. Hashes are only a fast first test: a
        hit is confirmed against the item's text, so a collision can never drop a record."""
        n, grams = self.options.n, {}
        self._texts, self._short = [], {}
        for spec in self.options.eval_sets:
            path = spec.path if spec.path.is_absolute() else base_dir / spec.path
            added = 0
            try:
                for item, texts in _items(spec, path):
                    for text in texts:
                        toks = normalize(text).split()
                        if len(toks) < self.options.min_tokens:
                            continue
                        ref = len(self._texts)
                        self._texts.append((spec.name or "", item, " ".join(toks)))
                        added += 1
                        if len(toks) < n:
                            self._short.setdefault(len(toks), {}).setdefault(hash(tuple(toks)), ref)
                        for i in range(len(toks) - n + 1):
                            grams.setdefault(hash(tuple(toks[i : i + n])), ref)
            except (OSError, ValueError) as exc:  # unreadable file, bad UTF-8, pyarrow's ArrowInvalid
                raise PluginError(f"decontamination: cannot read eval set {spec.name!r} ({path}): {exc}") from None
            if not added:
                raise PluginError(
                    f"decontamination: eval set {spec.name!r} ({path}) has no text of at least "
                    f"{self.options.min_tokens} tokens in fields {', '.join(spec.fields or ['(all)'])}"
                )
        self._grams = grams

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        if self._grams is None:  # used without a pipeline: paths are relative to the cwd
            self.build_index(Path.cwd())
        return [self.decide(r) for r in records]

    def decide(self, record: Record) -> Decision:
        parts = ["prompt", "response"] if self.options.field == "both" else [self.options.field]
        for part in parts:
            try:
                toks = normalize(field_text(record, part)).split()  # type: ignore[arg-type]
            except MissingField as exc:
                return exc.drop()
            hit = self.match(toks)
            if hit is not None:
                k, ref = hit
                name, item, text = self._texts[ref]
                whole = ", the whole item" if k < self.options.n else ""
                return Drop(f"contaminated: {k}-gram overlap with eval set '{name}' item {item} (in {part}{whole})")
        return KEEP

    def match(self, toks: list[str]) -> tuple[int, int] | None:
        """(gram length, text reference) of the first evaluation text `toks` overlaps."""
        assert self._grams is not None
        for k, index in [(self.options.n, self._grams), *sorted(self._short.items())]:
            for i in range(len(toks) - k + 1):
                gram = tuple(toks[i : i + k])
                ref = index.get(hash(gram))
                if ref is not None and f" {' '.join(gram)} " in f" {self._texts[ref][2]} ":
                    return k, ref
        return None


def _items(spec: EvalSet, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(item index, texts) per row of an evaluation set, in file order from 0."""
    fmt = _format(spec, path)
    rows = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "hf": _hf}[fmt](spec, path)
    wanted = spec.fields
    seen: set[str] = set()
    for i, row in enumerate(rows):
        seen.update(row)
        keys = wanted if wanted is not None else list(row)
        yield i, [t for k in keys for t in _texts(row.get(k))]
    missing = [f for f in wanted or [] if f not in seen]
    if missing:
        raise PluginError(
            f"decontamination: eval set {spec.name!r} ({path}) has no field "
            f"{', '.join(map(repr, missing))} (fields: {', '.join(sorted(seen)) or 'none'})"
        )


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v.get("content") if isinstance(v, dict) else v)]
    return []


def _format(spec: EvalSet, path: Path) -> EvalFormat:
    if not path.exists():
        raise PluginError(f"decontamination: eval set {spec.name!r}: {path} not found")
    if spec.format != "auto":
        return spec.format
    if path.is_dir():
        return "hf"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise PluginError(
            f"decontamination: eval set {spec.name!r}: cannot tell the format of {path} from its "
            f"suffix; use one of {', '.join(_SUFFIXES)} or set `format:`"
        )
    return fmt


def _jsonl(spec: EvalSet, path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PluginError(
                    f"decontamination: eval set {spec.name!r}: {path} line {n}: invalid JSON: {exc.msg}"
                ) from None
            if not isinstance(row, dict):
                raise PluginError(f"decontamination: eval set {spec.name!r}: {path} line {n}: not a JSON object")
            yield row


def _csv(spec: EvalSet, path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        yield from csv.DictReader(f)


def _parquet(spec: EvalSet, path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PluginError(f"decontamination: reading {path} needs pyarrow: pip install 'distill[datasets]'") from None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1000):
        yield from batch.to_pylist()


def _hf(spec: EvalSet, path: Path) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise PluginError(f"decontamination: reading {path} needs datasets: pip install 'distill[datasets]'") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise PluginError(
            f"decontamination: eval set {spec.name!r}: {path} is not a datasets.save_to_disk folder: {exc}"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise PluginError(
                f"decontamination: eval set {spec.name!r}: {path} holds the splits "
                f"{', '.join(ds)}; point `path:` at one of them"
            )
        ds = next(iter(ds.values()))
    yield from ds


@hookimpl
def register_filters(register) -> None:
    register(Decontamination)
