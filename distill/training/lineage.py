"""A trained student's lineage and card: what it was made from, and the license it inherits.

Every step of `distill.trainer.train_chain` writes, next to the student's weights:
- `distill-model.json`: the marker every distill model folder has (`model`, `license`,
  `revision`, read by `distill.models.folders.model_identity`), plus the lineage: the base model, the
  model this step started from, the datasets (on-disk path, content digest, rows, license), the
  trainer and library versions, its options, the hardware plan, metrics, the models that shaped
  the student (a distillation teacher, a reward model), the full inherited license tag, and the
  earlier steps.
- `README.md`: the model card (`distill.cards.model`), audited once the run audits the student.

The student's license combines the tag of the model it started from (a distill-trained parent
carries its own combined tag), the tags of its datasets, and those of any teacher or reward
model (the rules of `distill.licenses.combine_tags`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.cards.model import write_student_cards
from distill.errors import PluginError
from distill.io.store import atomic_write
from distill.layout import CARD_FILES, DATASET_SIDECAR, MODEL_MARKER
from distill.licenses import UNSPECIFIED, combine_tags, registry, tag_for
from distill.models.embedded import read_marker
from distill.models.folders import weights_digest
from distill.models.metadata import own_license
from distill.records import LicenseTag
from distill.secrets import redact

if TYPE_CHECKING:
    from distill.records import Record
    from distill.trainer import DatasetRef, TrainResult, TrainStep

#: A dataset folder may carry its license here (written by whoever exported it).
_LIBRARIES = ("trl", "peft", "transformers", "torch", "accelerate", "datasets")


#: Files distill writes beside an export's data: rewritten whenever the release policy changes,
#: which must not make a finished training step look trained on other data.
WRITTEN_BESIDE_DATA = frozenset({*CARD_FILES, DATASET_SIDECAR})


def fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def dataset_digest(path: Path) -> str:
    """sha256 over the folder's data files (names and contents), ignoring `datasets` cache files
    and distill's cards."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if f.name.startswith(("cache-", "tmp", ".")) or rel in WRITTEN_BESIDE_DATA:
            continue
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def dataset_summary(ref: DatasetRef, who: str) -> dict[str, Any]:
    path = Path(ref.path)
    if not path.is_dir():
        raise PluginError(f"{who} trainer: dataset folder {path} does not exist (run the export stage first)")
    import datasets

    try:
        rows = datasets.load_from_disk(str(path)).num_rows
    except Exception as exc:
        raise PluginError(f"{who} trainer: {path} is not a saved dataset: {type(exc).__name__}: {exc}") from None
    tag = ref.license or _sidecar_tag(path)
    return {
        "name": ref.name or path.name,
        "path": str(path.resolve()),
        "digest": dataset_digest(path),
        "rows": rows,
        "license_tag": (tag or tag_for(UNSPECIFIED)).model_dump(mode="json"),
        "license_declared": tag is not None,
    }


def _sidecar_tag(path: Path) -> LicenseTag | None:
    try:
        data = json.loads((path / DATASET_SIDECAR).read_text())
    except (OSError, ValueError):
        return None
    lic = data.get("license_tag") or data.get("license")
    if isinstance(lic, dict):
        return LicenseTag.model_validate(lic)
    return tag_for(lic) if isinstance(lic, str) else None


def model_summary(folder: Path, license: str | None = None) -> dict[str, Any]:
    """Id, weights hash and license tag of a model folder, from its marker when it has one."""

    marker = read_marker(folder) or {}
    if isinstance(marker.get("license_tag"), dict):
        tag = LicenseTag.model_validate(marker["license_tag"])
    else:
        stated = None if license or marker.get("license") else own_license(str(folder), folder, registry())
        tag = tag_for(license or marker.get("license") or stated or UNSPECIFIED)
    return {
        "id": str(marker.get("model") or folder.resolve().name),
        "path": str(folder.resolve()),
        "revision": marker.get("revision"),
        "file_hash": weights_digest(folder),
        "license": tag.expression,
        "license_tag": tag.model_dump(mode="json"),
        "base_model": marker.get("base_model"),
        "lineage": marker.get("lineage", []),
    }


def step_inputs(step: TrainStep, start: Path, student_license: str | None = None) -> dict[str, Any]:
    """What the step starts from, and the fingerprint that says whether an output is this step's."""
    who = step.trainer.name
    student = model_summary(start, None if start.joinpath(MODEL_MARKER).is_file() else student_license)
    datasets = [dataset_summary(ref, who) for ref in step.datasets]
    options = redact(step.trainer.options.model_dump(mode="json"))
    key = {
        "trainer": who,
        "version": step.trainer.plugin_version,
        "options": options,
        "datasets": [d["digest"] for d in datasets],
        "student": student["file_hash"],
    }

    return {"fingerprint": fingerprint(key), "student": student, "datasets": datasets, "options": options}


def write(out: Path, result: TrainResult, step: TrainStep, inputs: dict[str, Any], name: str) -> dict[str, Any]:
    """Write `distill-model.json` and `README.md` into `out` (and `out/merged`); return the marker."""

    student = inputs["student"]
    influences = []
    for role, path in result.influences:
        summary = model_summary(Path(path)) if Path(path).is_dir() else {"id": path, "license_tag": None}
        influences.append(
            {"role": role, **{k: summary.get(k) for k in ("id", "path", "file_hash", "license", "license_tag")}}
        )
    tags = [LicenseTag.model_validate(student["license_tag"])]
    tags += [LicenseTag.model_validate(d["license_tag"]) for d in inputs["datasets"]]
    tags += [LicenseTag.model_validate(i["license_tag"]) for i in influences if i["license_tag"]]
    tag = combine_tags(tags, expression=_and(t.expression for t in tags))
    base = student.get("base_model") or {k: student[k] for k in ("id", "path", "revision", "file_hash", "license")}
    trainer = step.trainer
    entry = {
        "step": step.name,
        "trainer": trainer.name,
        "model": name,
        "datasets": [{"name": d["name"], "digest": d["digest"]} for d in inputs["datasets"]],
        "global_step": result.global_step,
    }
    marker = {
        "format": 1,
        "model": name,
        "license": tag.expression,
        "revision": inputs["fingerprint"][:16],
        "description": f"{trainer.name} of {student['id']} by distill",
        "kind": "adapter" if result.adapter else ("reward-model" if trainer.produces == "reward" else "model"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprint": inputs["fingerprint"],
        "base_model": base,
        "parent": {k: student[k] for k in ("id", "path", "revision", "file_hash", "license")},
        "trainer": {
            "name": trainer.name,
            "package": trainer.plugin_package,
            "version": trainer.plugin_version,
            "libraries": _versions(),
        },
        "options": inputs["options"],
        "datasets": inputs["datasets"],
        "influences": [{k: v for k, v in i.items() if k != "license_tag"} for i in influences],
        "influences_paths": [list(x) for x in result.influences],
        "hardware": asdict(result.hardware) if result.hardware is not None else None,
        "metrics": result.metrics,
        "global_step": result.global_step,
        "resumed_from": result.resumed_from,
        "merged": "merged" if result.merged_path is not None else None,
        "license_tag": tag.model_dump(mode="json"),
        "lineage": list(student.get("lineage") or []) + [entry],
    }

    for folder in [out] + ([result.merged_path] if result.merged_path is not None else []):
        atomic_write(folder / MODEL_MARKER, (json.dumps(marker, indent=2, default=str) + "\n").encode())
        write_student_cards(folder, marker, registry())
    return marker


def _and(expressions: Iterable[str]) -> str:
    """`A AND B` of the distinct parts, splitting plain conjunctions so nothing repeats."""
    parts: dict[str, None] = {}
    for e in expressions:
        plain = "(" not in e and " OR " not in e and " WITH " not in e
        for p in e.split(" AND ") if plain else [e]:
            parts.setdefault(p.strip(), None)
    keys = list(parts)
    return " AND ".join(k if len(keys) == 1 or " " not in k else f"({k})" for k in keys)


def dataset_license(records: Iterable[Record]) -> LicenseTag:
    """The tag of a dataset exported from `records`: their effective tags combined."""
    tags = [r.provenance.license for r in records]
    return combine_tags(tags, expression=_and(t.expression for t in tags)) if tags else tag_for(UNSPECIFIED)


def _versions() -> dict[str, str]:
    found = {}
    for lib in _LIBRARIES:
        try:
            found[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return found
