"""License registry and the rules that combine licenses into a record's effective tag.

The core stamps every record with a tag computed from everything that touched it, so no
plugin can forget to. The registry is data (`distill/data/licenses.yaml`, schema in
`schemas/licenses.schema.json`); a config's `licenses:` section extends or overrides it. The
rules are the Data Provenance Initiative's: the most restrictive use wins, an unknown license
counts as the most restrictive, attribution and share-alike take the maximum, flags are unions.

Which registry is in effect is a context variable: a pipeline run (and an audit) activates
its config's registry, so every `registry()` call inside it, the core's or a plugin's, sees
the user's entries without anyone passing the registry around.
"""

from __future__ import annotations

import contextvars
import difflib
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from distill.errors import ConfigError
from distill.records import USE_ORDER, LicenseTag, UseCategory

if TYPE_CHECKING:
    from distill.records import Record

UNSPECIFIED = "LicenseRef-Unspecified"

Restriction = Literal["none", "no-competing-models", "no-improve-other-llm", "derivative-inherits-terms"]

#: What a `LicenseRef-` id may contain (SPDX: letters, digits, "." and "-").
LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.\-]+$")


class LicenseInfo(BaseModel):
    """What one license or model's terms allow, require and forbid."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Human-readable name, for cards and reports.")
    url: str | None = Field(None, description="Where the license text or terms are published.")
    use: UseCategory = Field(description="commercial, unspecified, non-commercial or academic-only.")
    attribution: bool = False
    share_alike: bool = False
    restriction: Restriction = Field("none", description="What the terms say about using outputs.")
    notices: list[str] = Field(default_factory=list, description="Text that must accompany a release.")
    name_prefix: str | None = Field(None, description="A model trained with it must have a name starting so.")
    acceptable_use_policy: str | None = Field(None, description="Link to the acceptable-use policy.")
    monthly_user_cap: int | None = Field(None, ge=1, description="Commercial use needs another license above it.")
    family: str | None = Field(
        None,
        description="Model family (llama, gemma, qwen): a student based on the "
        "same family may satisfy no-improve-other-llm.",
    )
    hf_license: str | None = Field(None, description="The id a Hugging Face card's `license:` uses.")
    aliases: list[str] = Field(default_factory=list, description="Other names model cards use for it.")
    text_markers: list[str] = Field(
        default_factory=list,
        description="Phrases that identify its text in a LICENSE file beside a model's weights "
        "(compared case- and whitespace-insensitively).",
    )
    notes: str | None = None


class LicenseOverride(BaseModel):
    """A config's `licenses:` entry: every field optional, merged over the built-in entry."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    url: str | None = None
    use: UseCategory | None = Field(None, description="Required for an id the registry does not have.")
    attribution: bool | None = None
    share_alike: bool | None = None
    restriction: Restriction | None = None
    notices: list[str] | None = None
    name_prefix: str | None = None
    acceptable_use_policy: str | None = None
    monthly_user_cap: int | None = Field(None, ge=1)
    family: str | None = None
    hf_license: str | None = None
    aliases: list[str] | None = None
    text_markers: list[str] | None = None
    notes: str | None = None


class ModelRule(BaseModel):
    """Which terms a model is under, by glob on its id and optionally its provider.

    A rule grants terms, so it must cover only ids whose terms were checked: exact ids or a
    pattern tight enough that every id it matches is under the same terms."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Case-insensitive glob on the model id, e.g. `meta-llama/Llama-3.1-*`.")
    provider: str | None = Field(
        None, description="openai, anthropic, google, local, self-hosted, or a plugin name; unset matches any."
    )
    license: str = Field(description="SPDX expression or LicenseRef- id of the model's terms.")
    checked: str | None = Field(
        None, description="What the rule was checked against (the model cards' license fields, by id)."
    )

    def matches(self, ids: Iterable[str], provider: str) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        return any(model_matches(self.model, i) for i in ids)


class FamilyRule(BaseModel):
    """Models of a family whose members carry different terms (sizes, variants, later releases).

    A match grants nothing: it turns "unknown" into "unknown, probably <family>: declare it",
    with the terms its members are known to carry, so a new variant never inherits the
    permissive member's license by its name."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(description="The family's name, as users say it (qwen, llama, gemma).")
    models: list[str] = Field(min_length=1, description="Case-insensitive globs on the model id, like a rule's.")
    candidates: list[str] = Field(min_length=1, description="License ids its members are known to carry.")
    checked: str | None = Field(None, description="Which members' cards show which terms.")

    def matches(self, ids: Iterable[str]) -> bool:
        return any(model_matches(pattern, i) for pattern in self.models for i in ids)


@dataclass(frozen=True)
class ModelMatch:
    """What the registry says about a model id: a rule that grants terms, or a family hint."""

    rule: ModelRule | None = None
    where: str = ""
    family: FamilyRule | None = None
    #: The rule is the config's own (a user declaration), not the registry's.
    from_config: bool = False

    @property
    def license(self) -> str | None:
        return self.rule.license if self.rule is not None else None


class Registry(BaseModel):
    """The registry file's shape; also the object the rest of distill asks about licenses."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(description="Bumped whenever an entry's meaning changes; audits record it.")
    licenses: dict[str, LicenseInfo]
    models: list[ModelRule] = Field(default_factory=list)
    families: list[FamilyRule] = Field(default_factory=list)
    _licensing: Any = PrivateAttr(None)
    _tags: dict[str, LicenseTag] = PrivateAttr(default_factory=dict)
    _keys: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    def info(self, key: str) -> LicenseInfo | None:
        return self.licenses.get(key)

    def by_alias(self, name: str) -> str | None:
        """The entry a model card's `license` or `license_name` value means, if any."""
        low = name.strip().lower()
        for key, info in self.licenses.items():
            if low == key.lower() or low == (info.hf_license or "").lower() or low in (a.lower() for a in info.aliases):
                return key
        return None

    def match_model(self, ids: Iterable[str], provider: str, first: Iterable[ModelRule] = ()) -> ModelMatch:
        """The first rule (a config's `first`, then the registry's) that grants the model's
        terms; failing that, the family it probably belongs to. Nothing is guessed beyond that."""
        ids = [i for i in ids if i]
        for i, rule in enumerate(first):
            if rule.matches(ids, provider):
                return ModelMatch(rule, f"config models[{i}] ({rule.model})", from_config=True)
        for rule in self.models:
            if rule.matches(ids, provider):
                where = f" at {provider}" if rule.provider else ""
                return ModelMatch(rule, f"registry rule {rule.model}{where}")
        family = next((f for f in self.families if f.matches(ids)), None)
        return ModelMatch(family=family)

    def identify_text(self, text: str) -> list[str]:
        """The licenses whose `text_markers` a LICENSE file's text contains (more than one:
        ambiguous, and the caller must not pick)."""
        flat = _words(text)
        return [k for k, info in self.licenses.items() if any(_words(m) in flat for m in info.text_markers)]

    def licensing(self) -> Any:  # -> license_expression.Licensing
        """SPDX symbols plus this registry's own `LicenseRef-` ids.

        ScanCode's index aliases some `LicenseRef-` names to SPDX ids (LicenseRef-Apache ->
        Apache-2.0); those aliases are dropped, so an unknown LicenseRef is reported, never
        silently read as something else.
        """
        if self._licensing is None:
            from license_expression import LicenseSymbol, Licensing, get_spdx_licensing

            symbols = []
            for sym in get_spdx_licensing().known_symbols.values():
                aliases = tuple(a for a in sym.aliases if not a.lower().startswith("licenseref-"))
                symbols.append(LicenseSymbol(sym.key, aliases=aliases, is_exception=sym.is_exception))
            spdx = {s.key for s in symbols}
            symbols += [LicenseSymbol(k) for k in self.licenses if k not in spdx]
            self._licensing = Licensing(symbols=symbols)
        return self._licensing

    def normalize(self, expression: str) -> str:
        """Validate an SPDX expression; ConfigError names it and suggests close matches
        (suggests only: an unknown id is never replaced by a guess)."""
        from license_expression import ExpressionError

        lic = self.licensing()
        try:
            parsed = lic.parse(expression)
        except ExpressionError as exc:
            raise ConfigError(f"invalid license expression {expression!r}: {exc}") from None
        if parsed is None:
            raise ConfigError("empty license expression")
        unknown = lic.unknown_license_keys(parsed)
        if unknown:
            raise ConfigError(f"invalid license expression {expression!r}: {self._explain_unknown(unknown)}")
        return str(parsed)

    def _explain_unknown(self, unknown: list[str]) -> str:
        known = sorted(set(self.licenses) | {str(k) for k in self.licensing().known_symbols})
        parts = []
        refs = {k[len("LicenseRef-") :].lower(): k for k in self.licenses if k.startswith("LicenseRef-")}
        for sym in unknown:
            if sym.startswith("LicenseRef-"):  # compare what follows the shared prefix
                close = [refs[c] for c in difflib.get_close_matches(sym[len("LicenseRef-") :].lower(), refs, n=3)]
            else:
                close = difflib.get_close_matches(sym, known, n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            if sym.startswith("LicenseRef-"):
                parts.append(
                    f"unknown license id {sym!r}: the registry has no such LicenseRef{hint}; "
                    "declare your own under `licenses:` in the config"
                )
            else:
                parts.append(f"{sym!r} is not an SPDX license id{hint}")
        return "; ".join(parts)

    def keys(self, expression: str) -> list[str]:
        """Every license id in an expression (both sides of an OR: the audit stays conservative)."""
        keys = self._keys.get(expression)
        if keys is None:
            lic = self.licensing()
            keys = self._keys[expression] = [str(k) for k in lic.license_keys(lic.parse(expression))]
        return list(keys)

    def tag_for(self, expression: str | None) -> LicenseTag:
        """The tag of a single declared license (a seed set's, or a model's terms)."""
        return self._tag(expression).model_copy(deep=True)

    def _tag(self, expression: str | None) -> LicenseTag:
        """Memoized per registry: every record of a run asks about the same few expressions."""
        expression = expression or UNSPECIFIED
        tag = self._tags.get(expression)
        if tag is None:
            tag = combine_tags([self._tag_for_key(k) for k in self.keys(expression)], expression=expression)
            self._tags[expression] = tag
        return tag

    def _tag_for_key(self, key: str) -> LicenseTag:
        info = self.licenses.get(key)
        if info is None:
            return LicenseTag(expression=key, use="academic-only", unknown=[key])
        return LicenseTag(
            expression=key,
            use=info.use,
            attribution=info.attribution,
            share_alike=info.share_alike,
            restrictions=[] if info.restriction == "none" else [info.restriction],
            notices=list(info.notices),
            name_prefixes=[info.name_prefix] if info.name_prefix else [],
        )

    def effective_tag(self, record: Record) -> LicenseTag:
        """Combine every source and every model that wrote, judged or edited the record.

        An edit by code (a PII redaction) adds no terms; an edit by a model adds its
        generator (role `editor`), which counts here like any writer.
        """
        exprs = [s.license for s in record.provenance.sources] + [g.license for g in record.provenance.generators]
        if not exprs:
            return self.tag_for(None)
        return combine_tags(self._tag(e) for e in _unique(exprs))

    def with_overrides(self, overrides: dict[str, LicenseOverride] | None) -> Registry:
        """A copy with a config's `licenses:` entries merged in (new ids must name their `use`)."""
        if not overrides:
            return self
        merged = dict(self.licenses)
        spdx = None
        for key, over in overrides.items():
            fields = {k: v for k, v in over.model_dump(exclude_unset=True).items() if v is not None}
            if key in merged:
                merged[key] = LicenseInfo.model_validate({**merged[key].model_dump(), **fields})
                continue
            if not LICENSE_REF.match(key):
                if spdx is None:
                    spdx = {str(k) for k in self.licensing().known_symbols}
                if key not in spdx:
                    close = difflib.get_close_matches(key, sorted(spdx | set(merged)), n=3)
                    hint = f" (did you mean {', '.join(close)}?)" if close else ""
                    raise ConfigError(
                        f"licenses.{key}: not an SPDX license id nor a `LicenseRef-` id "
                        f"(letters, digits, '.', '-'){hint}"
                    )
            if "use" not in fields:
                raise ConfigError(
                    f"licenses.{key}: a license the registry does not have needs `use` "
                    "(commercial, unspecified, non-commercial or academic-only)"
                )
            merged[key] = LicenseInfo.model_validate(fields)
        return Registry(version=self.version, licenses=merged, models=self.models, families=self.families)


def model_matches(pattern: str, model: str) -> bool:
    """Case-insensitive glob on a model id, forgiving about the organisation part."""
    pat, mid = pattern.lower(), model.lower().rstrip("/")
    if fnmatchcase(mid, pat):
        return True
    if "/" not in pat:  # `gpt-*` matches `openai/gpt-4o` too
        return fnmatchcase(mid.rsplit("/", 1)[-1], pat)
    # `meta-llama/Llama-3.1-*` matches a local folder named `Llama-3.1-8B-Instruct`
    return "/" not in mid and fnmatchcase(mid, pat.rsplit("/", 1)[-1])


@lru_cache(maxsize=1)
def builtin_registry() -> Registry:
    """The registry shipped with distill, before any config's entries."""
    text = resources.files("distill").joinpath("data/licenses.yaml").read_text()
    # libyaml's loader where PyYAML has it: the pure-Python one takes a tenth of a second here, every run.
    data = yaml.load(text, Loader=yaml.CSafeLoader) if hasattr(yaml, "CSafeLoader") else yaml.safe_load(text)
    return Registry.model_validate(data)


_ACTIVE: contextvars.ContextVar[Registry | None] = contextvars.ContextVar("distill_licenses", default=None)


def registry() -> Registry:
    """The registry in effect: the running config's, else the built-in one."""
    return _ACTIVE.get() or builtin_registry()


@contextmanager
def active(reg: Registry) -> Iterator[Registry]:
    """Make `reg` the registry in effect for the block (a run, an audit, a config load)."""
    token = _ACTIVE.set(reg)
    try:
        yield reg
    finally:
        _ACTIVE.reset(token)


def normalize(expression: str) -> str:
    """Validate an SPDX expression; raise ConfigError naming it and suggesting close matches."""
    return registry().normalize(expression)


def license_keys(expression: str) -> list[str]:
    return registry().keys(expression)


def tag_for(expression: str | None) -> LicenseTag:
    """The tag of a single declared license (a seed set's, or a model's terms)."""
    return registry().tag_for(expression)


def effective_tag(record: Record) -> LicenseTag:
    """Combine every source and every model that wrote or judged the record."""
    return registry().effective_tag(record)


def combine_tags(tags: Iterable[LicenseTag], expression: str | None = None) -> LicenseTag:
    """AND the expressions; most restrictive use; any attribution/share-alike; union of flags."""
    tags = list(tags)
    if not tags:
        return LicenseTag()
    if expression is None:
        parts = _unique(t.expression for t in tags)
        expression = " AND ".join(p if len(parts) == 1 or " " not in p else f"({p})" for p in parts)
    return LicenseTag(
        expression=expression,
        use=max((t.use for t in tags), key=USE_ORDER.index),
        attribution=any(t.attribution for t in tags),
        share_alike=any(t.share_alike for t in tags),
        restrictions=_unique(r for t in tags for r in t.restrictions),
        notices=_unique(n for t in tags for n in t.notices),
        name_prefixes=_unique(n for t in tags for n in t.name_prefixes),
        unknown=_unique(u for t in tags for u in t.unknown),
    )


def dataset_tag(tags: Iterable[LicenseTag]) -> LicenseTag:
    """A dataset's tag: its records' tags combined, in an order that does not depend on theirs.

    Pure conjunctions flatten to their sorted ids (`CC0-1.0 AND MIT`), so the same records
    always give the same card.
    """
    tags = list(tags)
    if not tags:
        return LicenseTag()
    parts: set[str] = set()
    for t in tags:
        if " OR " in t.expression or " WITH " in t.expression:
            parts.add(t.expression if " " not in t.expression else f"({t.expression})")
        else:
            parts.update(p.strip("() ") for p in t.expression.split(" AND "))
    combined = combine_tags(sorted(tags, key=lambda t: t.model_dump_json()), expression=" AND ".join(sorted(parts)))
    return _sorted_flags(combined)


def student_tag(dataset_tags: Iterable[LicenseTag], base_model_license: str | None) -> LicenseTag:
    """A trained student inherits its datasets' tags and its base model's terms."""
    tags = list(dataset_tags) + [tag_for(base_model_license)]
    return dataset_tag(tags)


def _sorted_flags(tag: LicenseTag) -> LicenseTag:
    return tag.model_copy(
        update={k: sorted(getattr(tag, k)) for k in ("restrictions", "notices", "name_prefixes", "unknown")}
    )


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)


def _words(text: str) -> str:
    """Lower-case words and version numbers: a LICENSE file's line breaks and punctuation vary."""
    return " " + " ".join(re.findall(r"[a-z0-9]+(?:\.[0-9]+)*", text.lower())) + " "
