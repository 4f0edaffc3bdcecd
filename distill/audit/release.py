"""Everything a run would release, audited together: one verdict per artefact and one overall.

A run's output holds several things someone may publish: every export (the SFT data, the
preference pairs) and every trained student. Auditing only one of them let the others go out
unexamined, so `distill audit OUT` audits them all, and the run's verdict is the worst of
theirs. `--stage`, or a path to one export or one student, narrows it to that artefact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from distill.audit.base import AuditReport, Verdict, audit
from distill.audit.rules import make_rules
from distill.audit.target import Target, load_target, run_exports, run_students
from distill.config.errors import format_validation_error
from distill.config.release import Acknowledgement, ReleaseSettings
from distill.errors import ConfigError
from distill.layout import RUN_FILE
from distill.licenses import active

if TYPE_CHECKING:
    from distill.registry import PluginRegistry

_ORDER: tuple[Verdict, ...] = ("cleared", "needs-acknowledgement", "blocked")
#: Flags that describe one model release: they never apply to a run's exports.
_MODEL_ONLY = ("name", "base_model", "base_model_license")


@dataclass
class Audited:
    """One artefact of a release and its audit."""

    target: Target
    report: AuditReport

    @property
    def label(self) -> str:
        """How the artefact is named in the summary: `export NAME`, or `student STEP (NAME)` by
        the chain step that trained it (its `merged/` weights are that step's too)."""
        if self.target.kind == "student":
            folder = self.target.root
            step = folder.parent.name if folder.name == "merged" else folder.name
            return f"student {step} ({self.report.release.name})"
        if self.target.export_path is None and self.target.stage:
            return f"stage {self.target.stage}"
        return f"export {self.target.stage}"


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """The overall verdict: a release is only as clear as its least clear artefact."""
    return max(verdicts, key=_ORDER.index) if verdicts else "cleared"


def release_targets(path: Path, stage: str | None, config: dict[str, Any] | None, what: str | None) -> list[Target]:
    """What PATH stands for: one artefact, or, for a run folder without `--stage`, every export
    (unless `what` is "model") and every student (unless it is "data")."""
    path = Path(path)
    if stage is not None or not (path / RUN_FILE).is_file():
        return [load_target(path, stage, config)]
    targets = []
    if what in (None, "data"):
        targets += [load_target(path, name, config) for name in run_exports(path)]
    if what in (None, "model"):
        targets += [load_target(student, None, config) for student in run_students(path)]
    if targets:
        return targets
    # Nothing the run would release (yet): audit what it has, as before 0.2, and say so. A run
    # that stops after its filters is still data someone means to release; refusing it would
    # leave them with no answer at all.
    target = load_target(path, None, config)
    if what == "model":
        note = f"the run has no trained student: audited the data of stage {target.stage!r} for a model trained on it"
    elif target.export_path is None:
        note = f"the run has nothing to release yet (no export, no trained student): audited its last stage {target.stage!r}"
    else:
        return [target]
    target.warnings.append(note)
    return [target]


def audit_target(
    target: Target,
    given: dict[str, Any],
    acks: list[Acknowledgement],
    plugins: PluginRegistry,
    where: str,
    several: bool = False,
) -> AuditReport:
    """Audit one artefact: the config's `release:` policy (as the run's own cards used it),
    overridden by `given` (the flags). Among `several` artefacts `--release` only chose which
    were audited, and the model-release flags (name, base model) apply to the students only."""
    settings = target.settings
    with active(settings.registry):
        if several:
            given = {k: v for k, v in given.items() if k != "what"}
            if target.kind == "dataset":
                given = {k: v for k, v in given.items() if k not in _MODEL_ONLY}
        if target.kind == "student" and given.get("what", "model") != "model":
            raise ConfigError(f"{target.root} is a trained student: only --release model applies")
        merged = {**settings.release.model_dump(exclude_unset=True), **given}
        if target.kind == "student":
            student = settings.release.model_dump()
            merged.update({k: v for k, v in student.items() if k in ("what", *_MODEL_ONLY) and k not in given})
        try:
            release = ReleaseSettings.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(
                "invalid release settings: "
                + format_validation_error(exc, ReleaseSettings, prefix="release", header=False)
            ) from None
        if release.name is None and release.what == "data" and target.stage:
            release = release.model_copy(update={"name": target.stage})
        rules = make_rules(plugins, release.rules)
        return audit(
            target.records,
            release,
            settings.registry,
            rules,
            target=where,
            kind=target.kind,
            stage=target.stage,
            models=settings.models,
            cli_acks=acks,
            warnings=target.warnings,
        )
