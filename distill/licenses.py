"""License registry and the rules that combine licenses into a record's effective tag.

The core stamps every record with a tag computed from everything that touched it, so no
plugin can forget to. The registry is data (`distill/data/licenses.yaml`); the rules are
the Data Provenance Initiative's: the most restrictive use wins, an unknown license counts as
the most restrictive, attribution and share-alike take the maximum, flags are unions.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from distill.errors import ConfigError
from distill.records import USE_ORDER, LicenseTag, UseCategory

if TYPE_CHECKING:
    from distill.records import Record

UNSPECIFIED = "LicenseRef-Unspecified"

Restriction = Literal["none", "no-competing-models", "no-improve-other-llm", "derivative-inherits-terms"]


class LicenseInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    use: UseCategory
    attribution: bool = False
    share_alike: bool = False
    restriction: Restriction = "none"
    notices: list[str] = Field(default_factory=list)
    name_prefix: str | None = None
    acceptable_use_policy: str | None = None
    monthly_user_cap: int | None = None


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    licenses: dict[str, LicenseInfo]


@lru_cache(maxsize=1)
def registry() -> Registry:
    text = resources.files("distill").joinpath("data/licenses.yaml").read_text()
    return Registry.model_validate(yaml.safe_load(text))


@lru_cache(maxsize=1)
def _licensing():  # -> license_expression.Licensing
    from license_expression import LicenseSymbol, Licensing, get_spdx_licensing

    spdx = get_spdx_licensing()
    own = [LicenseSymbol(k) for k in registry().licenses if k.startswith("LicenseRef-")]
    known = list(spdx.known_symbols.values()) + own
    return Licensing(symbols=known)


def normalize(expression: str) -> str:
    """Validate an SPDX expression; raise ConfigError naming it and suggesting close matches."""
    from license_expression import ExpressionError

    lic = _licensing()
    try:
        parsed = lic.parse(expression, validate=True, strict=False)
    except ExpressionError as exc:
        info = lic.validate(expression)
        bad = info.invalid_symbols or [expression]
        known = list(registry().licenses) + [str(k) for k in lic.known_symbols]
        hints = []
        for sym in bad:
            close = difflib.get_close_matches(str(sym), known, n=3, cutoff=0.6)
            if close:
                hints.append(f"{sym!s}: did you mean {', '.join(close)}?")
        hint = (" " + " ".join(hints)) if hints else ""
        raise ConfigError(f"invalid license expression {expression!r}: {exc}.{hint}") from None
    if parsed is None:
        raise ConfigError("empty license expression")
    return str(parsed)


def license_keys(expression: str) -> list[str]:
    lic = _licensing()
    return [str(k) for k in lic.license_keys(lic.parse(expression))]


def tag_for(expression: str | None) -> LicenseTag:
    """The tag of a single declared license (a seed set's, or a model's terms)."""
    if not expression:
        expression = UNSPECIFIED
    keys = license_keys(expression)
    return combine_tags([_tag_for_key(k) for k in keys], expression=expression)


def _tag_for_key(key: str) -> LicenseTag:
    info = registry().licenses.get(key)
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


def combine_tags(tags: Iterable[LicenseTag], expression: str | None = None) -> LicenseTag:
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


def effective_tag(record: Record) -> LicenseTag:
    """Combine every source and every model that wrote or judged the record."""
    exprs = [s.license for s in record.provenance.sources] + [g.license for g in record.provenance.generators]
    if not exprs:
        return tag_for(None)
    return combine_tags(_tag_cached(e) for e in _unique(exprs))


@lru_cache(maxsize=1024)
def _tag_cached(expression: str) -> LicenseTag:
    return tag_for(expression)


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)
