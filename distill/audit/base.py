"""`distill audit`: may this dataset (or a model trained on it) be released, for this use?

The audit groups a dataset's records by every license id that touched them (sources, and
every model that wrote, judged or edited them), then asks each audit rule about the groups.
Rules are classes registered like any plugin (`register_audit_rules`); the built-in ones live
in `distill.audit.rules` and always run, so restricting plugins never weakens an audit.

A finding is `blocking` (exit 1 whatever is acknowledged), needs an `acknowledge`ment (exit 1
until the user records one, with a reason), or is `info`. A question the software cannot
decide is never silently fine: it is a finding that needs acknowledgement.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from distill.config.release import Acknowledgement, ReleaseSettings
from distill.errors import ConfigError
from distill.licenses import UNSPECIFIED, LicenseInfo, ModelRule, Registry, dataset_tag
from distill.plugin import Plugin
from distill.records import LicenseTag

if TYPE_CHECKING:
    from distill.records import Record

Severity = Literal["blocking", "acknowledge", "info"]
SEVERITIES: tuple[Severity, ...] = ("blocking", "acknowledge", "info")
Verdict = Literal["cleared", "needs-acknowledgement", "blocked"]
EXAMPLES = 5
#: Ids of the records that stand for a model which shaped a student in training without
#: writing its data (a distillation teacher, a reward model; see `distill.audit.target`):
#: they carry that model's terms into the audit, but they are not data the student saw.
INFLUENCE_ID_PREFIX = "influence:"

DISCLAIMER = (
    "Not legal advice: this audit summarises public license texts and the terms recorded with "
    "each record, as distill's license registry describes them. Findings that need "
    "acknowledgement are legal questions only you (and your counsel) can answer."
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Contributor(_Model):
    """Where a license came from: a seed set, or a model in some role."""

    kind: Literal["source", "generator", "judge", "editor", "base-model"]
    name: str
    plugin: str | None = None

    def describe(self) -> str:
        if self.kind == "source":
            return f"seed set {self.name!r}"
        if self.kind == "base-model":
            return f"base model {self.name!r}"
        via = f" ({self.plugin} plugin)" if self.plugin else ""
        return f"{self.kind} model {self.name!r}{via}"


class LicenseUse(_Model):
    """One license id across the audited records."""

    license: str
    name: str | None = None
    url: str | None = None
    use: str = Field(description="Use category; `unknown` when the registry has no entry.")
    records: int
    examples: list[str] = Field(default_factory=list)
    contributors: list[Contributor] = Field(default_factory=list)


class Finding(_Model):
    rule: str
    severity: Severity
    license: str | None = None
    message: str
    fix: str | None = None
    records: int = 0
    examples: list[str] = Field(default_factory=list, description="Ids of some records concerned.")
    acknowledged: Acknowledgement | None = None


class AckRecord(Acknowledgement):
    source: Literal["config", "cli"] = "config"
    matched: int = Field(0, description="How many findings it acknowledged.")


class AuditReport(_Model):
    verdict: Verdict
    exit_code: int
    target: str
    kind: Literal["dataset", "student"] = "dataset"
    stage: str | None = None
    records: int
    release: ReleaseSettings
    base_model_license: str | None = None
    registry_version: int
    license: LicenseTag
    licenses: list[LicenseUse]
    findings: list[Finding]
    acknowledgements: list[AckRecord] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    disclaimer: str = DISCLAIMER

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def open_findings(self) -> list[Finding]:
        """What stands between this release and exit code 0."""
        return [
            f
            for f in self.findings
            if f.severity == "blocking" or (f.severity == "acknowledge" and f.acknowledged is None)
        ]


@dataclass
class AuditInput:
    """What every audit rule is asked about (rules must not change it)."""

    release: ReleaseSettings
    registry: Registry
    records: int
    licenses: dict[str, LicenseUse]
    tag: LicenseTag
    base_model_license: str | None = None
    base_keys: list[str] = field(default_factory=list)
    #: (model, declared terms, what the model says) -> ids of the records it touched.
    conflicts: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    #: (model, recorded terms, how they were found) -> record ids, for terms a registry rule
    #: gave or that were recorded before distill said how: a newer registry may disagree.
    by_rule: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    #: How many of `records` are data, not a model's influence (`INFLUENCE_ID_PREFIX`); None
    #: when the caller did not count them apart (then every record is data).
    data_records: int | None = None

    def info(self, key: str) -> LicenseInfo | None:
        return self.registry.info(key)

    def label(self, key: str) -> str:
        info = self.info(key)
        return f"{key} ({info.name})" if info is not None and info.name else key

    def finding(
        self, rule: str, severity: Severity, license: str | None, message: str, fix: str | None = None
    ) -> Finding:
        """A finding about `license`, with its record count and example ids filled in."""
        use = self.licenses.get(license) if license else None
        return Finding(
            rule=rule,
            severity=severity,
            license=license,
            message=message,
            fix=fix,
            records=use.records if use else 0,
            examples=list(use.examples) if use else [],
        )

    def with_terms(self) -> list[tuple[str, LicenseInfo]]:
        """Registered licenses present, sorted; unknown ids are the `unknown-terms` rule's."""
        return [(k, i) for k in sorted(self.licenses) if k != UNSPECIFIED and (i := self.info(k)) is not None]


class AuditRule(Plugin):
    """One policy check. Subclasses set `name` and `description` and implement `check`."""

    kind: ClassVar[str] = "audit-rule"
    #: One line for `distill plugins` and the report.
    description: ClassVar[str] = ""

    def check(self, audit: AuditInput) -> list[Finding]:  # pragma: no cover - interface
        raise NotImplementedError


def base_model_license(release: ReleaseSettings, registry: Registry, models: Iterable[ModelRule] = ()) -> str | None:
    """The student's base model's terms: declared, else by model rule, else unspecified."""
    if release.base_model_license:
        return release.base_model_license
    if not release.base_model:
        return None
    return registry.match_model([release.base_model], "local", first=models).license or UNSPECIFIED


def collect(
    records: Iterable[Record], registry: Registry, release: ReleaseSettings, base_license: str | None
) -> AuditInput:
    """Group the records by license id, remembering who contributed each."""
    ids: dict[str, set[str]] = {}
    who: dict[str, set[tuple[str, str, str | None]]] = {}  # (kind, name, plugin): cheap per record
    tags: dict[str, LicenseTag] = {}
    conflicts: dict[tuple[str, str, str], set[str]] = {}
    by_rule: dict[tuple[str, str, str], set[str]] = {}
    n = data = 0
    for r in records:
        n += 1
        data += not r.id.startswith(INFLUENCE_ID_PREFIX)
        tag = registry.effective_tag(r)
        tags.setdefault(tag.model_dump_json(), tag)
        contributions: list[tuple[str, tuple[str, str, str | None]]] = [
            (s.license, ("source", s.dataset, None)) for s in r.provenance.sources
        ]
        contributions += [(g.license, (g.role, g.model, g.plugin)) for g in r.provenance.generators]
        for g in r.provenance.generators:
            if g.model_says:
                conflicts.setdefault((g.model, g.license, g.model_says), set()).add(r.id)
            if g.terms_source is None or g.terms_source.startswith("registry rule"):
                by_rule.setdefault((g.model, g.license, g.terms_source or ""), set()).add(r.id)
        for expression, contributor in contributions:
            for key in registry.keys(expression):
                ids.setdefault(key, set()).add(r.id)
                who.setdefault(key, set()).add(contributor)
        if not contributions:
            ids.setdefault(UNSPECIFIED, set()).add(r.id)
    base_keys: list[str] = []
    if base_license is not None:
        base_keys = registry.keys(base_license)
        tag = registry.tag_for(base_license)
        tags.setdefault(tag.model_dump_json(), tag)
        for key in base_keys:
            ids.setdefault(key, set())
            who.setdefault(key, set()).add(("base-model", release.base_model or "base model", None))
    licenses = {}
    for key in sorted(ids):
        info = registry.info(key)
        licenses[key] = LicenseUse(
            license=key,
            name=info.name if info else None,
            url=info.url if info else None,
            use=info.use if info else "unknown",
            records=len(ids[key]),
            examples=sorted(ids[key])[:EXAMPLES],
            contributors=[
                Contributor(kind=k, name=nm, plugin=p)
                for k, nm, p in sorted(who.get(key, set()), key=lambda c: (c[0], c[1], c[2] or ""))
            ],
        )
    return AuditInput(
        release=release,
        registry=registry,
        records=n,
        licenses=licenses,
        tag=dataset_tag(tags.values()),
        base_model_license=base_license,
        base_keys=base_keys,
        conflicts={k: sorted(v) for k, v in sorted(conflicts.items())},
        by_rule={k: sorted(v) for k, v in sorted(by_rule.items())},
        data_records=data,
    )


def audit(
    records: Iterable[Record],
    release: ReleaseSettings,
    registry: Registry,
    rules: list[AuditRule],
    *,
    target: str = "",
    kind: Literal["dataset", "student"] = "dataset",
    stage: str | None = None,
    models: Iterable[ModelRule] = (),
    cli_acks: Iterable[Acknowledgement] = (),
    warnings: Iterable[str] = (),
) -> AuditReport:
    """Run every rule over the records and apply the acknowledgements."""
    if release.what == "data" and (release.base_model or release.base_model_license):
        release = release.model_copy(update={"base_model": None, "base_model_license": None})
    base = base_model_license(release, registry, models) if release.what == "model" else None
    inp = collect(records, registry, release, base)
    findings: list[Finding] = []
    for rule in rules:
        try:
            found = list(rule.check(inp))
        except Exception as exc:
            found = [
                Finding(
                    rule=rule.name,
                    severity="blocking",
                    message=f"audit rule {rule.name!r} failed: {type(exc).__name__}: {exc}",
                    fix="fix or remove the audit rule plugin; its policy was not checked",
                )
            ]
        findings.extend(found)
    acks = [AckRecord(**a.model_dump(), source="config") for a in release.acknowledge]
    acks += [AckRecord(**a.model_dump(), source="cli") for a in cli_acks]
    check_ack_rules(acks, [r.name for r in rules])
    notes = list(warnings)
    for f in findings:
        for a in acks:
            if not a.matches(f.rule, f.license):
                continue
            if f.severity == "acknowledge" and f.acknowledged is None:
                f.acknowledged = Acknowledgement(**a.model_dump(include={"rule", "license", "reason", "by"}))
                a.matched += 1
            elif f.severity == "blocking":
                notes.append(
                    f"acknowledgement of {a.rule}{':' + a.license if a.license else ''} does not apply: "
                    "blocking findings cannot be acknowledged; change the data or the release"
                )
    for a in acks:
        if a.matched == 0:
            notes.append(
                f"acknowledgement of {a.rule}{':' + a.license if a.license else ''} matched no finding that needs one"
            )
    findings.sort(key=lambda f: (SEVERITIES.index(f.severity), f.rule, f.license or "", f.message))
    open_ = [f for f in findings if f.severity == "blocking" or (f.severity == "acknowledge" and not f.acknowledged)]
    verdict: Verdict = (
        "blocked"
        if any(f.severity == "blocking" for f in findings)
        else "needs-acknowledgement"
        if open_
        else "cleared"
    )
    return AuditReport(
        verdict=verdict,
        exit_code=1 if open_ else 0,
        target=target,
        kind=kind,
        stage=stage,
        records=inp.records,
        release=release,
        base_model_license=base,
        registry_version=registry.version,
        license=inp.tag,
        licenses=list(inp.licenses.values()),
        findings=findings,
        acknowledgements=acks,
        warnings=_unique(notes),
    )


def check_ack_rules(acks: Iterable[Acknowledgement], names: list[str]) -> None:
    """An acknowledgement of a rule that does not exist is a typo, not a no-op."""
    for a in acks:
        if a.rule not in names:
            close = difflib.get_close_matches(a.rule, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"acknowledgement names an unknown audit rule {a.rule!r}{hint}; rules: {', '.join(sorted(names))}"
            )


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
