"""distill from Python: `distill.run(config)` runs the same engine as `distill run config.yaml`.

There is no second code path: a dict or a `Config` goes through the loader a YAML file goes
through, the same `Pipeline` runs it, with the same request cache, provenance and resume. A
notebook re-running a cell resumes the run (committed stages are skipped, committed teacher
calls are not paid again), exactly as re-running the command does. Plugins can be handed in
as objects (`plugins=[my_module]`), so a filter written in a notebook cell needs no package.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distill.config.loader import Config, LoadedConfig, load_config, parse_config
from distill.errors import ConfigError, StoreError
from distill.io.store import StageManifest, atomic_write, read_shards
from distill.layout import EXPORT_DIR, MANIFEST, RUN_FILE, STAGES_DIR
from distill.records import Record

if TYPE_CHECKING:
    import datasets

    from distill.audit.report import AuditReport
    from distill.stages.context import RunResult, StageResult

ConfigLike = str | os.PathLike[str] | Mapping[str, Any] | Config

__all__ = ["ConfigLike", "Run", "generate", "load", "run"]

#: Where `generate` keeps the rows it was given, inside its output folder.
GENERATE_INPUT = "input.jsonl"


def load(config: ConfigLike, *, base_dir: str | os.PathLike[str] | None = None) -> LoadedConfig:
    """A config from a YAML path, a dict (as the YAML would parse) or a `Config`.

    Relative paths in a dict or `Config` (seeds, output, cache, rubric files) resolve against
    `base_dir`, by default the working directory; in a file, against the file's folder."""
    if isinstance(config, str | os.PathLike):
        return load_config(Path(config))
    folder = Path(base_dir) if base_dir is not None else None
    if isinstance(config, Config):
        data: Any = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise ConfigError(f"a config is a path, a dict or a distill Config, got {type(config).__name__}")
    return parse_config(data, base_dir=folder)


def run(
    config: ConfigLike,
    *,
    until: str | None = None,
    plugins: Sequence[Any] = (),
    base_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    strict_plugins: bool = False,
) -> Run:
    """Run (or resume) a pipeline and return its `Run`.

    `plugins` are modules or objects with `@hookimpl` functions, registered beside the
    installed ones (entry points) exactly as a package's would be. `progress` defaults to
    on when stderr is a terminal or a notebook; `log` receives the run's progress lines
    (default: stderr), secrets scrubbed."""
    from distill.errors import scrub
    from distill.pipeline import Pipeline
    from distill.registry import make_registry

    loaded = load(config, base_dir=base_dir)
    extra = [(f"python-{i}-{getattr(p, '__name__', type(p).__name__)}", p) for i, p in enumerate(plugins)]
    registry = make_registry(strict=strict_plugins or loaded.config.plugins.strict or None, extra=extra)
    say = log or (lambda m: print(m, file=sys.stderr))
    pipeline = Pipeline(
        loaded,
        registry,
        progress=_interactive() if progress is None else progress,
        log=lambda m: say(scrub(m)),
    )
    result = pipeline.run(until=until)
    return Run(result.output, loaded, result)


def generate(
    data: Iterable[Mapping[str, Any]] | datasets.Dataset,
    *,
    teacher: str | Mapping[str, Any],
    output: str | os.PathLike[str],
    task: str | Mapping[str, Any] = "response",
    license: str | None = None,
    name: str = "input",
    prompt_field: str | None = None,
    seed: int = 0,
    batch_size: int = 32,
    cache: str | os.PathLike[str] | None = None,
    plugins: Sequence[Any] = (),
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> datasets.Dataset:
    """One generate stage over rows in memory, for a notebook: `data` (dicts or a `Dataset`)
    are the seeds, `teacher` a plugin name or `{"plugin": ..., "options": {...}}`, `task` the
    same for the task. Returns the generated records as a `Dataset` (see `Run.dataset`), each
    row with its provenance and license tag. Calling it again with the same `output` resumes:
    what was committed is not asked again. `license` is the SPDX expression the rows were
    published under; without it they are `unspecified` and no release can be cleared."""
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(json.dumps(dict(r), ensure_ascii=False, default=str) + "\n" for r in data)
    if not rows:
        raise ConfigError("distill.generate: `data` has no rows")
    seeds = folder / GENERATE_INPUT
    if not seeds.is_file() or seeds.read_text(encoding="utf-8") != rows:
        atomic_write(seeds, rows.encode("utf-8"))
    source: dict[str, Any] = {"path": GENERATE_INPUT, "name": name, "license": license, "prompt_field": prompt_field}
    cfg: dict[str, Any] = {
        "output": ".",
        "seed": seed,
        "seeds": [{k: v for k, v in source.items() if v is not None}],
        "teachers": {"teacher": _ref(teacher)},
        "stages": [
            {"kind": "generate", "name": "generate", "teacher": "teacher", "task": _ref(task), "batch_size": batch_size}
        ],
    }
    if cache is not None:
        cfg["cache"] = {"path": str(Path(cache).resolve())}
    return run(cfg, base_dir=folder, plugins=plugins, progress=progress, log=log).dataset("generate")


def _ref(ref: str | Mapping[str, Any]) -> dict[str, Any]:
    return {"plugin": ref} if isinstance(ref, str) else dict(ref)


def _row(r: Record) -> dict[str, Any]:
    """One record as a dataset row. Metadata, candidates and provenance differ in shape from
    record to record, which one Arrow schema cannot hold: they travel as JSON text."""
    return {
        "id": r.id,
        "messages": [{"role": m.role, "content": m.content} for m in r.messages],
        "license": r.provenance.license.expression,
        "candidates": json.dumps([c.model_dump(mode="json") for c in r.candidates]),
        "metadata": json.dumps(r.metadata, default=str),
        "provenance": r.provenance.model_dump_json(),
    }


def _interactive() -> bool:
    """Progress by default in a terminal and in a Jupyter kernel, whose stderr is no terminal:
    there rich draws its bars in a widget, or writes text lines without ipywidgets
    (`distill.io.progress.progress_console`)."""
    if sys.stderr.isatty():
        return True
    return "ipykernel" in sys.modules


class Run:
    """A run's output folder, read through the store: what each stage kept and dropped, its
    exports as `datasets.Dataset`s, its audit and its report. `Run.open(folder)` reads a run
    made earlier (by the command or by `run`)."""

    def __init__(self, output: Path, config: LoadedConfig | None = None, result: RunResult | None = None) -> None:
        self.output = Path(output)
        self.config = config
        #: What this process did (None for a run opened from disk).
        self.result = result

    @classmethod
    def open(cls, output: str | os.PathLike[str]) -> Run:
        out = Path(output)
        if not (out / RUN_FILE).is_file():
            raise StoreError(f"{out} is not a run's output folder (no {RUN_FILE})")
        return cls(out)

    def __repr__(self) -> str:
        return f"Run({str(self.output)!r}, stages={self.stage_names()})"

    @property
    def stages(self) -> list[StageResult]:
        """This process's stage results (counts, drop reasons, seconds, whether skipped)."""
        return list(self.result.stages) if self.result else []

    def stage_names(self) -> list[str]:
        """`seeds` and every stage with output, in the order they ran."""
        return list(self._manifests())

    def counts(self) -> dict[str, dict[str, int]]:
        """Per stage: records in, generated, kept and rejected, as the stage's manifest has them."""
        return {name: dict(m.stats.get("totals", {})) for name, m in self._manifests().items()}

    def _manifests(self) -> dict[str, StageManifest]:
        """Every stage's manifest, read once, in the order the stages ran."""
        folder = self.output / STAGES_DIR
        found = (
            {p.parent.name: self._manifest(p.parent.name) for p in folder.glob(f"*/{MANIFEST}")}
            if folder.is_dir()
            else {}
        )
        return dict(sorted(found.items(), key=lambda kv: (kv[1].started_at.timestamp(), kv[0])))

    def records(self, stage: str, which: Literal["kept", "rejected"] = "kept") -> Iterator[Record]:
        """A stage's records with their provenance, in commit order."""
        m = self._manifest(stage)
        names = [s.kept_file if which == "kept" else s.rejected_file for s in m.shards]
        return read_shards(self.output / STAGES_DIR / stage, names)

    def dataset(self, name: str) -> datasets.Dataset:
        """An export stage's dataset as written (`messages`, or `prompt`/`chosen`/`rejected`),
        or any other stage's kept records, one row per record: `id`, `messages`, `license` (the
        effective expression) and `candidates`, `metadata`, `provenance` as JSON text."""
        import datasets

        folder = self.output / EXPORT_DIR / name
        if folder.is_dir():
            return datasets.load_from_disk(str(folder))
        names = self.stage_names()
        if name not in names:
            known = ", ".join(names) or "none"
            raise StoreError(f"no stage or export named {name!r} in {self.output} (stages: {known})")
        return datasets.Dataset.from_list([_row(r) for r in self.records(name)])

    def audit(
        self, *, stage: str | None = None, what: Literal["data", "model"] | None = None, **given: Any
    ) -> list[AuditReport]:
        """Audit the run's exports and students (or one `stage`) for a release, as `distill audit`
        does, without writing beside them; `given` takes the command's options by name (`use`,
        `name`, `base_model`, `base_model_license`, `monthly_users`)."""
        from distill.audit.release import audit_target, release_targets
        from distill.registry import make_registry

        targets = release_targets(self.output, stage, None, what)
        plugins = make_registry()
        several = len(targets) > 1
        flags = {k: v for k, v in {**given, "what": what}.items() if v is not None}
        return [audit_target(t, flags, [], plugins, str(self.output), several) for t in targets]

    def report(self) -> Path:
        """Write `OUT/report.html` again and return its path."""
        from distill.report.html import write_report

        return write_report(self.output)

    def _manifest(self, stage: str) -> StageManifest:
        path = self.output / STAGES_DIR / stage / MANIFEST
        try:
            return StageManifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            known = ", ".join(self.stage_names()) or "none"
            raise StoreError(f"no stage {stage!r} in {self.output} (stages: {known})") from None
