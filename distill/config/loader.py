"""The pipeline config: one YAML file, validated by pydantic, errors named by key path.

Secrets come in through `${ENV_VAR}` interpolation. The interpolated values exist only in
memory: what distill stores (run snapshot, stage hashes) is the raw text with the
`${...}` placeholders still in it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from distill.config.errors import format_validation_error
from distill.config.release import ReleaseSettings
from distill.config.stages import (
    EvaluateStage,
    FilterStage,
    GenerateStage,
    PluginRef,
    RankStage,
    Stage,
    StrictModel,
    TrainStage,
    stage_ref_errors,
)
from distill.config.tracking import TrackingSettings
from distill.errors import ConfigError, suggest
from distill.io.seeds import SeedSource
from distill.licenses import LicenseOverride, ModelRule, Registry, active, builtin_registry, normalize
from distill.secrets import MIN_SECRET_LENGTH, is_secret_name, replace_values


class CacheSettings(StrictModel):
    enabled: bool = Field(True, description="Look every teacher request up before making it.")
    path: Path | None = Field(
        None,
        description="SQLite file; default ~/.cache/distill/requests.sqlite "
        "($DISTILL_CACHE_DIR moves it). Shared by runs and teachers.",
    )


class PluginSettings(StrictModel):
    strict: bool = Field(False, description="Fail when any installed plugin cannot be loaded.")


class Config(StrictModel):
    version: Literal[1] = 1
    output: Path = Field(description="Output directory; an existing one is resumed.")
    seed: int = Field(0, description="Run seed: every sampling decision derives from it.")
    #: Empty for a run whose first stage makes its own inputs (Magpie).
    seeds: list[SeedSource] = Field(default_factory=list)
    teachers: dict[str, PluginRef] = Field(default_factory=dict)
    stages: list[Stage] = Field(min_length=1)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    licenses: dict[str, LicenseOverride] = Field(
        default_factory=dict,
        description="Extend or override the license registry: an id (SPDX or "
        "LicenseRef-...) and the fields to set; a new id needs `use`.",
    )
    models: list[ModelRule] = Field(
        default_factory=list,
        description="Which terms models are under, by glob on the model id; tried "
        "before the registry's rules, after a teacher's own `license:` option.",
    )
    release: ReleaseSettings = Field(
        default_factory=ReleaseSettings,
        description="The release policy the cards written at export are "
        "audited against; `distill audit` flags override it.",
    )
    tracking: TrackingSettings = Field(
        default_factory=TrackingSettings,
        description="Experiment trackers: the trainers' metrics and every stage's figures.",
    )

    @field_validator("stages")
    @classmethod
    def _name_stages(cls, stages: list[Any]) -> list[Any]:
        counts: dict[str, int] = {}
        for s in stages:
            counts[s.kind] = counts.get(s.kind, 0) + 1
        seen: set[str] = set()
        for i, s in enumerate(stages):
            if not s.name:
                s.name = s.kind if counts[s.kind] == 1 else f"{s.kind}-{i}"
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", s.name):
                raise ValueError(f"stage name {s.name!r} must be letters, digits, '.', '_' or '-'")
            if s.name in seen or s.name == "seeds":
                raise ValueError(f"duplicate stage name {s.name!r}")
            seen.add(s.name)
        return stages

    @field_validator("licenses")
    @classmethod
    def _license_entries(cls, licenses: dict[str, LicenseOverride]) -> dict[str, LicenseOverride]:
        try:
            builtin_registry().with_overrides(licenses)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("licenses.")) from None
        return licenses

    @field_validator("models")
    @classmethod
    def _model_licenses(cls, models: list[ModelRule]) -> list[ModelRule]:
        for i, rule in enumerate(models):
            try:
                rule.license = normalize(rule.license)
            except ConfigError as exc:
                raise ValueError(f"models[{i}].license: {exc}") from None
        return models

    @model_validator(mode="after")
    def _teachers_exist(self) -> Config:
        for i, s in enumerate(self.stages):
            wanted: list[tuple[str, str | None]] = []
            if isinstance(s, (GenerateStage, RankStage)):
                wanted.append((f"stages[{i}].teacher", s.teacher))
            elif isinstance(s, EvaluateStage):
                wanted.extend((f"stages[{i}].contenders[{j}].teacher", c.teacher) for j, c in enumerate(s.contenders))
                wanted.extend((f"stages[{i}].contenders[{j}].judge", c.judge) for j, c in enumerate(s.contenders))
            for where, key in wanted:
                if key is not None and key not in self.teachers:
                    hint = suggest(key, list(self.teachers))
                    known = ", ".join(sorted(self.teachers)) or "none defined"
                    raise ValueError(f"{where}: no teacher named {key!r}{hint} (teachers: {known})")
        return self


class LoadedConfig(BaseModel):
    config: Config
    raw: dict[str, Any] = Field(description="Parsed YAML before interpolation: safe to store.")
    path: Path | None = None
    #: Where relative paths resolve for a config that is not a file (`distill.run(dict)`).
    folder: Path | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else (self.folder or Path.cwd())

    def license_registry(self) -> Registry:
        """The built-in license registry with this config's `licenses:` entries merged in."""
        return builtin_registry().with_overrides(self.config.licenses)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(data: Any, where: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string; a missing variable names its key."""
    if isinstance(data, dict):
        return {k: interpolate(v, f"{where}.{k}" if where else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, f"{where}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, str):

        def repl(m: re.Match[str]) -> str:
            value = os.environ.get(m.group(1))
            if value is None:
                if m.group(2) is None:
                    raise ConfigError(f"{where}: environment variable {m.group(1)} is not set")
                return m.group(2)
            return value

        return _ENV.sub(repl, data)
    return data


def digest_view(data: Any, where: str = "") -> Any:
    """What a stage's digest covers: the config with `${VAR}` resolved, so that changing a model
    name or a URL in the environment redoes the stages it feeds, except variables whose names say
    they hold a secret (`*_KEY`, `*TOKEN*`, ...), which stay placeholders: a digest is stored,
    and a stored hash of a short secret can be searched. A config without placeholders digests
    exactly as its raw text."""
    if isinstance(data, dict):
        return {k: digest_view(v, f"{where}.{k}" if where else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [digest_view(v, f"{where}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:

        def repl(m: re.Match[str]) -> str:
            if is_secret_name(m.group(1)):
                return m.group(0)
            value = os.environ.get(m.group(1))
            return m.group(2) or "" if value is None else value

        return _ENV.sub(repl, data)
    return data


#: Shorter interpolated values are not secrets, and redacting them would garble messages.
def interpolated_values(data: Any) -> dict[str, str]:
    """The values `${VAR}` placeholders in `data` resolve to, each with its placeholder: what
    an error message must show instead of the value (the value may be a key)."""
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            for m in _ENV.finditer(node):
                value = os.environ.get(m.group(1))
                if value is not None and len(value) >= MIN_SECRET_LENGTH:
                    found[value] = "${" + m.group(1) + "}"

    walk(data)
    return found


def parse_config(data: Any, path: Path | None = None, base_dir: Path | None = None) -> LoadedConfig:
    """Validate parsed YAML (or the same data from Python). Relative paths resolve against the
    file's folder, or `base_dir` for data that is not a file."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}the config must be a mapping of keys to values (e.g. `output: out/`), got {kind}")
    _check_shape(data, f"{path}: " if path else "")
    raw = data
    data = interpolate(data)
    try:
        # The config's own license ids must be known while its seeds and models are checked.
        with active(_license_registry(data.get("licenses"))):
            config = Config.model_validate(data)
    except ValidationError as exc:  # it may quote a value that came from the environment: a key
        raise ConfigError(
            replace_values(format_validation_error(exc, Config, source=path), interpolated_values(raw))
        ) from None
    root = path.parent if path is not None else base_dir
    if root is not None and not config.output.is_absolute():
        config.output = root / config.output
    if root is not None and config.cache.path is not None and not config.cache.path.is_absolute():
        config.cache.path = root / config.cache.path
    return LoadedConfig(config=config, raw=raw, path=path, folder=base_dir)


def _license_registry(section: Any) -> Registry:
    """The registry a config's `licenses:` section makes; a malformed section is reported by
    the full validation that follows, under its own key path."""
    if not section:
        return builtin_registry()
    try:
        overrides = {str(k): LicenseOverride.model_validate(v) for k, v in dict(section).items()}
        return builtin_registry().with_overrides(overrides)
    except (TypeError, ValueError, ConfigError):
        return builtin_registry()


def load_config(path: str | Path) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # a value the YAML constructors refuse, e.g. an integer of 5,000 digits
        raise ConfigError(f"{path}: invalid YAML: {str(exc).split(';')[0]}") from None
    return parse_config(data, path)


#: A config is small: deeper nesting or more values than this is a mistake or an attack
#: (YAML aliases can make a few lines expand into billions of values, or refer to themselves).
MAX_DEPTH = 64
MAX_VALUES = 100_000


def _check_shape(data: Any, where: str) -> None:
    """Refuse what YAML allows but no config needs, before anything walks the data: alias
    cycles, alias expansion past MAX_VALUES values, nesting past MAX_DEPTH, NUL characters."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def walk(node: Any, at: str, depth: int) -> int:
        if isinstance(node, str):
            if "\x00" in node:
                raise ConfigError(f"{where}{at or '(top level)'}: contains a NUL character")
            return 1
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) in sizes:  # an alias of something already measured: count it again, walk it once
            return sizes[id(node)]
        if id(node) in open_:
            raise ConfigError(f"{where}{at or '(top level)'}: refers to itself (a YAML alias inside its own anchor)")
        if depth >= MAX_DEPTH:
            raise ConfigError(f"{where}{at or '(top level)'}: nested more than {MAX_DEPTH} levels deep")
        open_.add(id(node))
        total = 1
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            if isinstance(k, str) and "\x00" in k:
                raise ConfigError(f"{where}{at or '(top level)'}: a key contains a NUL character")
            total += walk(
                v,
                f"{at}.{k}" if isinstance(node, dict) and at else (str(k) if isinstance(node, dict) else f"{at}[{k}]"),
                depth + 1,
            )
            if total > MAX_VALUES:
                raise ConfigError(
                    f"{where}the config expands to more than {MAX_VALUES:,} values "
                    "(YAML aliases repeating a large anchor?)"
                )
        open_.discard(id(node))
        sizes[id(node)] = total
        return total

    walk(data, "", 0)


def validate_plugin_options(loaded: LoadedConfig, registry: Any) -> dict[str, Any]:
    """Check every plugin reference against the registry; return validated options by path."""
    cfg = loaded.config
    refs: list[tuple[str, str, PluginRef]] = [(f"teachers.{k}", "teacher", ref) for k, ref in cfg.teachers.items()]
    for i, s in enumerate(cfg.stages):
        if isinstance(s, GenerateStage):
            refs.append((f"stages[{i}].task", "task", s.task))
        elif isinstance(s, RankStage):
            refs.append((f"stages[{i}].ranker", "ranker", s.ranker))
        elif isinstance(s, FilterStage):
            refs.extend((f"stages[{i}].filters[{j}]", "filter", f) for j, f in enumerate(s.filters))
        elif isinstance(s, TrainStage):
            refs.extend(
                (f"stages[{i}].steps[{j}]", "trainer", PluginRef(plugin=t.trainer, options=t.options))
                for j, t in enumerate(s.steps)
            )
        elif isinstance(s, EvaluateStage):
            refs.extend((f"stages[{i}].evaluators[{j}]", "evaluator", e) for j, e in enumerate(s.evaluators))
            refs.extend(
                (f"stages[{i}].contenders[{j}].ranker", "ranker", c.ranker)
                for j, c in enumerate(s.contenders)
                if c.ranker is not None
            )
    validated: dict[str, Any] = {}
    errors: list[str] = stage_ref_errors(cfg, registry)
    licenses = loaded.license_registry()
    for where, kind, ref in refs:
        try:
            spec = registry.get(kind, ref.plugin)
        except Exception as exc:  # PluginError: unknown name, lists the known ones
            errors.append(f"{where}.{'trainer' if kind == 'trainer' else 'plugin'}: {exc}")
            continue
        try:
            validated[where] = spec.cls.Options.model_validate(ref.options)
        except ValidationError as exc:
            errors.append(
                format_validation_error(exc, spec.cls.Options, prefix=f"{where}.options", source=None, header=False)
            )
            continue
        declared = getattr(validated[where], "license", None)
        if kind == "teacher" and isinstance(declared, str):
            try:
                licenses.normalize(declared)
            except ConfigError as exc:
                errors.append(f"{where}.options.license: {exc}")
    for i, s in enumerate(cfg.stages):
        if isinstance(s, TrainStage) and s.student_license:
            try:
                licenses.normalize(s.student_license)
            except ConfigError as exc:
                errors.append(f"stages[{i}].student_license: {exc}")
        if isinstance(s, RankStage) and s.teacher is None and f"stages[{i}].ranker" in validated:
            if getattr(registry.get("ranker", s.ranker.plugin).cls, "needs_judge", False):
                errors.append(
                    f"stages[{i}].teacher: ranker {s.ranker.plugin!r} needs a judge model; name one of `teachers`"
                )
    if errors:
        raise ConfigError(
            replace_values("invalid config:\n" + "\n".join(f"  {e}" for e in errors), interpolated_values(loaded.raw))
        )
    return validated


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)
