"""What `distill audit PATH` audits, and under which registry and release policy.

PATH may be a run's output folder (its exports and students: `distill.audit.release`; one
stage with `--stage`), one of its export
folders (`OUT/export/NAME`), or a trained student's folder, recognised by the
`distill-student.json` a trainer writes beside the weights. The run's own config snapshot
(`run.json`) supplies the `licenses:`, `models:` and `release:` sections unless `--config`
names another file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.audit.base import INFLUENCE_ID_PREFIX
from distill.config.errors import format_validation_error
from distill.config.loader import interpolate
from distill.config.release import ReleaseSettings
from distill.errors import ConfigError, StoreError
from distill.io.store import StageManifest, as_dict, read_shards
from distill.layout import MANIFEST, MODEL_MARKER, MODELS_DIR, RUN_FILE, STUDENT_MANIFEST
from distill.licenses import UNSPECIFIED, LicenseOverride, ModelRule, Registry, active, builtin_registry, effective_tag
from distill.records import Event, Generator, Provenance, Record


class Influence(BaseModel):
    """A model whose outputs trained the student directly (token distributions, rewards)."""

    model_config = ConfigDict(extra="ignore")

    role: str
    id: str | None = None
    license: str | None = None


class StudentManifest(BaseModel):
    """What a trainer records about a student, so it can be audited and carded later."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The student's release name.")
    base_model: str | None = None
    base_model_license: str | None = Field(None, description="SPDX expression of the base model's terms.")
    datasets: list[str] = Field(
        min_length=1, description="Run outputs or export folders it was trained on, relative to this file's folder."
    )
    influences: list[Influence] = Field(
        default_factory=list,
        description="Models that shaped the student in "
        "training without writing its data: a distillation teacher, a reward model.",
    )


class _Sections(BaseModel):
    """The parts of a config the audit reads; everything else is ignored."""

    model_config = ConfigDict(extra="ignore")

    licenses: dict[str, LicenseOverride] = Field(default_factory=dict)
    models: list[ModelRule] = Field(default_factory=list)
    release: ReleaseSettings = Field(default_factory=ReleaseSettings)


@dataclass
class Settings:
    """The license registry, model rules and release policy an artefact is audited under: the
    run's own (its `run.json`), or those of the config named by `--config`."""

    registry: Registry
    models: list[ModelRule]
    release: ReleaseSettings


@dataclass
class Target:
    """One artefact to audit: the records it holds (a student: those of every dataset it was
    trained on, and one for each model that shaped it) and where its audit is recorded."""

    kind: Literal["dataset", "student"]
    root: Path
    records: list[Record]
    settings: Settings
    stage: str | None = None
    #: Where the dataset's cards go (an export stage's folder), when there is one.
    export_path: Path | None = None
    export_format: str | None = None
    manifest: StudentManifest | None = None
    warnings: list[str] = field(default_factory=list)


def settings_from(raw: dict[str, Any] | None, source: str = RUN_FILE) -> Settings:
    """Registry, model rules and release policy from a (raw, uninterpolated) config mapping."""

    data = {k: v for k, v in (raw or {}).items() if k in ("licenses", "models", "release")}
    data = interpolate(data)
    try:
        overrides = _Sections.model_validate({"licenses": data.get("licenses") or {}}).licenses
        registry = builtin_registry().with_overrides(overrides)
        with active(registry):
            sections = _Sections.model_validate(data)
            for _i, rule in enumerate(sections.models):
                rule.license = registry.normalize(rule.license)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, _Sections, source=Path(source))) from None
    return Settings(registry=registry, models=sections.models, release=sections.release)


def load_target(path: Path, stage: str | None = None, config: dict[str, Any] | None = None) -> Target:
    """Find the records PATH stands for; `config` (a raw config mapping) replaces the run's."""
    path = Path(path)
    manifest = _manifest(path)
    if manifest is not None:
        return _student(path, manifest, config)
    if (path / RUN_FILE).is_file():
        return _dataset(path, stage, config)
    if path.parent.name == "export" and (path.parent.parent / RUN_FILE).is_file():
        if stage is not None and stage != path.name:
            raise ConfigError(f"{path} is the export of stage {path.name!r}, not {stage!r}")
        return _dataset(path.parent.parent, path.name, config)
    raise StoreError(
        f"{path} is not a distill output folder (run.json), an export folder (OUT/export/NAME) "
        f"or a trained student (with {STUDENT_MANIFEST})"
    )


def _run_config(root: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((root / RUN_FILE).read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"cannot read the run's config snapshot {root / 'run.json'}: {exc}") from None
    return cfg if isinstance(cfg, dict) else {}


def _stages(cfg: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, kind, raw) of each configured stage, named the way the config names them."""
    stages = [s for s in cfg.get("stages", []) if isinstance(s, dict)]
    kinds = [str(s.get("kind")) for s in stages]
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return [
        (str(s.get("name") or (kind if counts[kind] == 1 else f"{kind}-{i}")), kind, s)
        for i, (s, kind) in enumerate(zip(stages, kinds))
    ]


def run_exports(root: Path) -> list[str]:
    """The export stages of a run that have committed output, in config order."""
    return [n for n, k, _ in _stages(_run_config(root)) if k == "export" and (root / "stages" / n / MANIFEST).is_file()]


def _dataset(root: Path, stage: str | None, config: dict[str, Any] | None) -> Target:
    cfg = _run_config(root)
    stages: list[tuple[str, str, dict[str, Any]]] = [("seeds", "seeds", {}), *_stages(cfg)]
    present = [(n, k, s) for n, k, s in stages if (root / "stages" / n / MANIFEST).is_file()]
    if stage is None:
        exports = [p for p in present if p[1] == "export"]
        if not (exports or present):
            raise StoreError(f"{root} has no committed stage to audit")
        stage = (exports or present)[-1][0]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", stage):  # a name, never a path out of `root`
        raise StoreError(f"{stage!r} is not a stage name (letters, digits, '.', '_' or '-')")
    chosen = next((p for p in stages if p[0] == stage), None)
    manifest_path = root / "stages" / stage / MANIFEST
    if not manifest_path.is_file():
        known = ", ".join(n for n, _, _ in present) or "none"
        raise StoreError(f"{root} has no stage {stage!r} (stages with output: {known})")
    try:
        manifest = StageManifest.model_validate_json(manifest_path.read_bytes())
    except ValueError as exc:
        raise StoreError(f"manifest of stage {stage!r} is corrupted ({manifest_path}): {exc}") from None
    records = list(read_shards(manifest_path.parent, [s.kept_file for s in manifest.shards]))
    target = Target(
        kind="dataset",
        root=root,
        records=records,
        stage=stage,
        settings=settings_from(config if config is not None else cfg),
    )
    if not manifest.complete:
        target.warnings.append(f"stage {stage!r} is incomplete: auditing its {len(records)} committed records")
    if manifest.kind == "export":
        target.export_path = root / "export" / stage
        target.export_format = (chosen[2].get("format") if chosen else None) or "sft"
    return target


def _manifest(folder: Path) -> StudentManifest | None:
    """A student's manifest, or one read from a trainer's lineage marker that lists its datasets."""
    p = folder / STUDENT_MANIFEST
    if p.is_file():
        try:
            return StudentManifest.model_validate_json(p.read_bytes())
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {p}: {exc}") from None
    try:
        marker = json.loads((folder / MODEL_MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("datasets"), list):
        return None
    paths = [d["path"] for d in marker["datasets"] if isinstance(d, dict) and isinstance(d.get("path"), str)]
    base = as_dict(marker.get("base_model"))
    if not paths:
        return None
    paths += _earlier_steps(marker, Path(paths[0]).parent, paths)
    influences = [i for i in marker.get("influences") or [] if isinstance(i, dict) and isinstance(i.get("role"), str)]
    return StudentManifest(
        name=str(marker.get("model") or folder.name),
        base_model=base.get("id"),
        base_model_license=base.get("license"),
        datasets=paths,
        influences=[Influence.model_validate(i) for i in influences],
    )


def _earlier_steps(marker: dict[str, Any], exports: Path, known: list[str]) -> list[str]:
    """The exports that earlier steps of the chain trained on (a DPO step's student was first
    fine-tuned on the SFT export): the lineage names them, beside this step's own export."""
    names = [
        d["name"]
        for step in marker.get("lineage") or []
        if isinstance(step, dict)
        for d in step.get("datasets") or []
        if isinstance(d, dict) and isinstance(d.get("name"), str)
    ]
    seen = {Path(p).resolve() for p in known}
    found = []
    for name in dict.fromkeys(names):
        path = exports / name
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) and path.is_dir() and path.resolve() not in seen:
            found.append(str(path))
    return found


def run_students(root: Path) -> list[Path]:
    """The final student of each train stage of a run: of the folders under `OUT/models/<stage>/`
    with a model marker, the one at the end of the chain (longest lineage; a step's merged
    weights before its adapter)."""
    students = []
    for stage_dir in sorted(p for p in (root / MODELS_DIR).glob("*") if p.is_dir()):
        best: tuple[int, int, str] | None = None
        for marker_path in [*stage_dir.glob(f"*/{MODEL_MARKER}"), *stage_dir.glob(f"*/merged/{MODEL_MARKER}")]:
            try:
                marker = json.loads(marker_path.read_text())
            except (OSError, ValueError):
                continue
            lineage = marker.get("lineage") if isinstance(marker, dict) else None
            key = (len(lineage) if isinstance(lineage, list) else 0, marker_path.parent.name == "merged")
            if best is None or key > best[:2]:
                best = (*key, str(marker_path.parent))
        if best is not None:
            students.append(Path(best[2]))
    return students


def _student(folder: Path, manifest: StudentManifest, config: dict[str, Any] | None) -> Target:
    records: list[Record] = []
    warnings: list[str] = []
    settings: Settings | None = None
    for d in manifest.datasets:
        path = Path(d) if Path(d).is_absolute() else folder / d
        try:
            part = load_target(path, config=config)
        except StoreError as exc:
            raise StoreError(f"student {folder}: its dataset {d}: {exc}") from None
        if part.kind != "dataset":
            raise StoreError(f"student {folder}: {d} is a student, not a dataset")
        records += part.records
        warnings += part.warnings
        settings = settings or part.settings
    assert settings is not None
    records += [_influence_record(folder, i) for i in manifest.influences]
    release = settings.release.model_copy(
        update={
            "what": "model",
            "name": manifest.name,
            "base_model": manifest.base_model,
            "base_model_license": (
                settings.registry.normalize(manifest.base_model_license) if manifest.base_model_license else None
            ),
        }
    )
    settings = Settings(registry=settings.registry, models=settings.models, release=release)
    return Target(kind="student", root=folder, records=records, settings=settings, manifest=manifest, warnings=warnings)


def _influence_record(folder: Path, influence: Influence) -> Record:
    """A model that trained the student through its outputs (a distillation teacher's token
    distributions, a reward model's scores) is audited like a model that wrote its data: one
    record stands for it, so its terms give findings with its name on them."""

    role = "judge" if "reward" in influence.role else "generator"
    record = Record(
        id=f"{INFLUENCE_ID_PREFIX}{influence.role}:{influence.id or 'unknown'}",
        messages=[],
        provenance=Provenance(
            generators=[
                Generator(
                    role=role,
                    plugin=f"trainer {influence.role}",
                    model=influence.id or "unknown",
                    license=influence.license or UNSPECIFIED,
                )
            ],
            events=[
                Event(
                    stage="train", action="loaded", reason=f"{influence.role} of {folder.name}: shaped it in training"
                )
            ],
        ),
    )
    record.provenance.license = effective_tag(record)
    return record
