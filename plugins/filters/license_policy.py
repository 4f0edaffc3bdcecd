"""License policy: drop records whose effective license tag the project may not use.

The core stamps every record with a tag combining the licenses of everything that touched
it (seed sets, generating and judging models); this filter only reads that tag, so it
follows whatever the registry in `distill.licenses` decides. The sources and models are
consulted for one thing: naming, in the drop reason, which of them brought the license in.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from distill import licenses
from distill.errors import ConfigError, suggest
from distill.filter import Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options
from distill.records import USE_ORDER, LicenseTag, Record

IntendedUse = Literal["commercial", "non-commercial", "academic-only"]


def known_restrictions() -> list[str]:
    """Restrictions the license registry can put on a tag."""
    named = [r for r in get_args(licenses.Restriction) if r != "none"]
    used = [i.restriction for i in licenses.registry().licenses.values() if i.restriction != "none"]
    return list(dict.fromkeys(named + used))


class LicensePolicy(Filter):
    """Drop records whose license tag breaks the declared policy: a use category, an output
    restriction or a license the project cannot accept, or a license nobody declared."""

    name = "license-policy"

    class Options(Options):
        intended_use: IntendedUse | None = Field(
            None,
            description="What the data is for; denies every more restrictive use category "
            "(commercial denies non-commercial and academic-only).",
        )
        deny_use: list[str] = Field(
            default_factory=list, description=f"Use categories to drop: {', '.join(USE_ORDER)}."
        )
        deny_restrictions: list[str] = Field(
            default_factory=list,
            description="Output restrictions to drop, e.g. no-competing-models "
            "when training a model that competes with the teacher's maker.",
        )
        deny_licenses: list[str] = Field(default_factory=list, description="SPDX ids or LicenseRef-* ids to drop.")
        allow_licenses: list[str] | None = Field(
            None, description="If set, every license id in a record's tag must be one of these."
        )
        deny_unknown: bool = Field(
            False,
            description="Drop records with an unspecified license "
            "(LicenseRef-Unspecified) or one the registry does not know.",
        )

        @field_validator("deny_use")
        @classmethod
        def _uses(cls, value: list[str]) -> list[str]:
            for u in value:
                if u not in USE_ORDER:
                    raise ValueError(
                        f"unknown use category {u!r}{suggest(u, list(USE_ORDER))}; known: {', '.join(USE_ORDER)}"
                    )
            return value

        @field_validator("deny_restrictions")
        @classmethod
        def _restrictions(cls, value: list[str]) -> list[str]:
            known = known_restrictions()
            for r in value:
                if r not in known:
                    raise ValueError(f"unknown restriction {r!r}{suggest(r, known)}; known: {', '.join(known)}")
            return value

        @field_validator("deny_licenses", "allow_licenses")
        @classmethod
        def _ids(cls, value: list[str] | None) -> list[str] | None:
            return None if value is None else [_license_id(v) for v in value]

        @model_validator(mode="after")
        def _some_rule(self) -> LicensePolicy.Options:
            if not (
                self.intended_use
                or self.deny_use
                or self.deny_restrictions
                or self.deny_licenses
                or self.allow_licenses is not None
                or self.deny_unknown
            ):
                raise ValueError(
                    "the policy is empty: set intended_use, deny_use, deny_restrictions, "
                    "deny_licenses, allow_licenses or deny_unknown"
                )
            return self

    def __init__(self, options=None, **kwargs) -> None:
        super().__init__(options, **kwargs)
        o = self.options
        implied = (
            []
            if o.intended_use is None
            else [u for u in USE_ORDER[USE_ORDER.index(o.intended_use) + 1 :] if u != "unspecified"]
        )
        self.denied_uses = set(o.deny_use) | set(implied)

    def check(self, record: Record) -> bool | tuple[bool, str]:
        o, tag = self.options, record.provenance.license
        if tag.use in self.denied_uses:
            return False, _reason(f"use {tag.use} not allowed", record, lambda t: t.use == tag.use)
        for r in tag.restrictions:
            if r in o.deny_restrictions:
                return False, _reason(f"restriction {r} not allowed", record, lambda t: r in t.restrictions)
        ids = _ids(tag)
        for key in ids:
            if key in o.deny_licenses:
                return False, _reason(f"license {key} denied", record, lambda t: key in _ids(t))
            if o.allow_licenses is not None and key not in o.allow_licenses:
                return False, _reason(f"license {key} not in allow_licenses", record, lambda t: key in _ids(t))
        if o.deny_unknown:
            for key in ids:
                if key in tag.unknown or key == licenses.UNSPECIFIED:
                    what = "unspecified license" if key == licenses.UNSPECIFIED else f"unknown license {key}"
                    return False, _reason(what, record, lambda t: key in _ids(t))
        return True


def _license_id(value: str) -> str:
    """A single license id as the registry spells it; LicenseRef-* ids the registry does
    not list are taken as written (a user may deny one before the registry knows it)."""
    if value.startswith("LicenseRef-") and value not in licenses.registry().licenses:
        return value
    try:
        canonical = licenses.normalize(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if len(licenses.license_keys(canonical)) != 1:
        raise ValueError(f"{value!r} is an expression; list single license ids")
    return canonical


def _ids(tag: LicenseTag) -> list[str]:
    return list(dict.fromkeys([*_keys(tag.expression), *tag.unknown]))


@lru_cache(maxsize=1024)
def _keys(expression: str) -> tuple[str, ...]:
    return tuple(licenses.license_keys(expression))


@lru_cache(maxsize=1024)
def _tag(expression: str) -> LicenseTag:
    return licenses.tag_for(expression)


def _reason(what: str, record: Record, brought_in) -> str:
    """`license policy: <what> (<expression> from <origin>; ...)`, naming the seed sets and
    models whose own license has the offending property."""
    p = record.provenance
    origins = [(s.license, f"seed {s.dataset!r}") for s in p.sources]
    origins += [(g.license, f"{g.role} {g.model!r}") for g in p.generators]
    named = list(dict.fromkeys(f"{expr} from {who}" for expr, who in origins if brought_in(_tag(expr))))
    return f"license policy: {what} ({'; '.join(named) or p.license.expression})"


@hookimpl
def register_filters(register) -> None:
    register(LicensePolicy)
