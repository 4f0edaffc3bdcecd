"""The built-in audit rules: what the registry's fields mean for a release.

Each rule is a small class, exactly what an organisation writes for its own policy and
registers through `register_audit_rules`. Severities follow one principle: what the licenses
decide is `blocking` or `info`; what only a person can decide (does the student compete with
the provider? is it a derivative?) needs an acknowledgement with a reason.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from distill.audit.base import AuditInput, AuditRule, Finding
from distill.audit.conflicts import RegistryChanged, TermsConflict
from distill.audit.empty import EmptyRelease
from distill.config.errors import format_validation_error
from distill.errors import ConfigError
from distill.licenses import UNSPECIFIED

if TYPE_CHECKING:
    from distill.registry import PluginRegistry


class UnknownTerms(AuditRule):
    name = "unknown-terms"
    description = "Every source and model has declared terms the registry knows."

    def check(self, audit: AuditInput) -> list[Finding]:
        out = []
        for key, use in audit.licenses.items():
            if key != UNSPECIFIED and audit.info(key) is not None:
                continue
            who = ", ".join(c.describe() for c in use.contributors) or "records with no recorded source"
            if key == UNSPECIFIED:
                msg = f"no terms declared for {who}; unknown terms count as the most restrictive"
                fix = (
                    "declare them: `license:` on the seed source, `license:` in the teacher's options "
                    "(or a `models:` entry), or release.base_model_license; then run again"
                )
            else:
                msg = (
                    f"{key!r} (from {who}) is not in the license registry, so what it allows is unknown "
                    "(counted as academic-only; never guessed from a similar name)"
                )
                fix = f"add `{key}` under `licenses:` in the config with its `use` and obligations"
            out.append(audit.finding(self.name, "blocking", key, msg, fix))
        return out


class UseCategory(AuditRule):
    name = "use-category"
    description = "The licenses allow the intended use (commercial or research)."

    def check(self, audit: AuditInput) -> list[Finding]:
        out = []
        commercial = audit.release.use == "commercial"
        for key, info in audit.with_terms():
            label = audit.label(key)
            if info.use in ("non-commercial", "academic-only") and commercial:
                out.append(
                    audit.finding(
                        self.name,
                        "blocking",
                        key,
                        f"{label} allows {info.use} use only; the release is for commercial use",
                        "drop these records (e.g. with the license-policy filter) or release "
                        "for research (--use research)",
                    )
                )
            elif info.use == "academic-only":
                out.append(
                    audit.finding(
                        self.name,
                        "acknowledge",
                        key,
                        f"{label} allows academic use only: is this release academic research?",
                    )
                )
            elif info.use == "unspecified":
                out.append(
                    audit.finding(
                        self.name,
                        "acknowledge",
                        key,
                        f"{label} does not say whether {audit.release.use} use is allowed",
                    )
                )
        return out


class CompetingModels(AuditRule):
    name = "no-competing-models"
    description = "Terms that forbid developing models that compete with the provider."

    def check(self, audit: AuditInput) -> list[Finding]:
        out = []
        for key, info in audit.with_terms():
            if info.restriction != "no-competing-models":
                continue
            if audit.release.what == "model":
                msg = (
                    f"{audit.label(key)} forbid using its outputs to develop models that compete with the "
                    "provider: does this student compete? distill cannot decide that"
                )
            else:
                msg = (
                    f"{audit.label(key)} forbid using its outputs to develop competing models; receivers of "
                    "this data may train models with it, and whether the terms bind them is unsettled"
                )
            out.append(audit.finding(self.name, "acknowledge", key, msg))
        return out


class ImproveOtherModels(AuditRule):
    name = "no-improve-other-llm"
    description = "Terms that forbid improving any LLM outside the licensor's family."

    def check(self, audit: AuditInput) -> list[Finding]:
        out = []
        for key, info in audit.with_terms():
            if info.restriction != "no-improve-other-llm":
                continue
            label, family = audit.label(key), info.family or key
            if audit.release.what == "data":
                out.append(
                    audit.finding(
                        self.name,
                        "info",
                        key,
                        f"{label}: receivers may not use this data to improve LLMs other than "
                        f"{family} derivatives; the card and NOTICE pass this on",
                    )
                )
                continue
            base = audit.base_keys
            families = {i.family for k in base if (i := audit.info(k)) is not None and i.family}
            if key in base:
                out.append(
                    audit.finding(
                        self.name,
                        "info",
                        key,
                        f"{label}: the student's base model is under the same license, so it is a derivative of it",
                    )
                )
            elif info.family and info.family in families:
                out.append(
                    audit.finding(
                        self.name,
                        "acknowledge",
                        key,
                        f"{label} forbids improving other LLMs; the base model is another "
                        f"{info.family} model ({audit.base_model_license}): does it count as a "
                        "derivative under these terms?",
                    )
                )
            elif base and UNSPECIFIED not in base:
                out.append(
                    audit.finding(
                        self.name,
                        "blocking",
                        key,
                        f"{label} forbids using its outputs to improve any LLM other than "
                        f"{family} derivatives; the student's base model is under "
                        f"{audit.base_model_license}",
                        f"train a {family} base model, or drop these records",
                    )
                )
            else:
                out.append(
                    audit.finding(
                        self.name,
                        "acknowledge",
                        key,
                        f"{label} forbids improving LLMs other than {family} derivatives and the "
                        "base model is not declared: is the student one?",
                        "declare the base model (--base-model)",
                    )
                )
        return out


class DerivativeTerms(AuditRule):
    name = "derivative-inherits-terms"
    description = "Terms that pass on to models trained on the outputs."

    def check(self, audit: AuditInput) -> list[Finding]:
        out = []
        for key, info in audit.with_terms():
            if info.restriction != "derivative-inherits-terms":
                continue
            if audit.release.what == "model":
                out.append(
                    audit.finding(
                        self.name,
                        "acknowledge",
                        key,
                        f"a model trained on {audit.label(key)} outputs to perform like it is a "
                        "derivative: distributing it passes on the use restrictions and the terms "
                        "(the model card and NOTICE carry them); is this student one?",
                    )
                )
            else:
                out.append(
                    audit.finding(
                        self.name,
                        "info",
                        key,
                        f"{audit.label(key)}: its use restrictions pass on to receivers; the card "
                        "and NOTICE carry them",
                    )
                )
        return out


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.rsplit("/", 1)[-1]).strip().lower()


class NamePrefix(AuditRule):
    name = "name-prefix"
    description = "A model trained on the outputs carries the required name prefix."

    def check(self, audit: AuditInput) -> list[Finding]:
        out = []
        name = audit.release.name
        for key, info in audit.with_terms():
            if not info.name_prefix:
                continue
            prefix = info.name_prefix
            if audit.release.what == "data":
                out.append(
                    audit.finding(
                        self.name,
                        "info",
                        key,
                        f"{audit.label(key)}: a model trained on this "
                        f"data and distributed must have a name beginning {prefix!r}",
                    )
                )
            elif not name:
                out.append(
                    audit.finding(
                        self.name,
                        "blocking",
                        key,
                        f"{audit.label(key)} requires the model's "
                        f"name to begin with {prefix!r}, and no release name was given",
                        "give the release name (--name)",
                    )
                )
            elif not _norm(name).startswith(_norm(prefix)):
                out.append(
                    audit.finding(
                        self.name,
                        "blocking",
                        key,
                        f"{audit.label(key)} requires the model's name to begin with {prefix!r}; {name!r} does not",
                        f"rename the student, e.g. {prefix + ' ' + name.rsplit('/', 1)[-1]!r}",
                    )
                )
            else:
                out.append(
                    audit.finding(
                        self.name, "info", key, f"{name!r} begins with {prefix!r}, as {audit.label(key)} requires"
                    )
                )
        return out


class UserCap(AuditRule):
    name = "monthly-user-cap"
    description = "Licenses that need a separate license above a number of monthly users."

    def check(self, audit: AuditInput) -> list[Finding]:
        out = []
        users = audit.release.monthly_users
        for key, info in audit.with_terms():
            cap = info.monthly_user_cap
            if cap is None:
                continue
            if users is not None and users > cap:
                out.append(
                    audit.finding(
                        self.name,
                        "blocking",
                        key,
                        f"{audit.label(key)} needs a separate license "
                        f"above {cap:,} monthly active users; the release expects {users:,}",
                    )
                )
            else:
                out.append(
                    audit.finding(
                        self.name,
                        "info",
                        key,
                        f"{audit.label(key)}: above {cap:,} monthly active users, a separate license is needed",
                    )
                )
        return out


class Notices(AuditRule):
    name = "notices"
    description = "Attribution and notices that must accompany the release (written to NOTICE)."

    def check(self, audit: AuditInput) -> list[Finding]:
        out = []
        for key, info in audit.with_terms():
            if info.attribution or info.notices:
                what = f" ({len(info.notices)} notice(s))" if info.notices else ""
                out.append(
                    audit.finding(
                        self.name, "info", key, f"{audit.label(key)} requires attribution{what}; NOTICE collects it"
                    )
                )
        return out


class ShareAlike(AuditRule):
    name = "share-alike"
    description = "Share-alike licenses: the release must carry the same terms."

    def check(self, audit: AuditInput) -> list[Finding]:
        out = []
        for key, info in audit.with_terms():
            if not info.share_alike:
                continue
            if audit.release.what == "data":
                out.append(
                    audit.finding(
                        self.name,
                        "info",
                        key,
                        f"{audit.label(key)} is share-alike: the data must "
                        "be released under the same terms (the card's license includes them)",
                    )
                )
            else:
                out.append(
                    audit.finding(
                        self.name,
                        "acknowledge",
                        key,
                        f"{audit.label(key)} is share-alike: is a "
                        "model trained on this data an adaptation that must be shared alike?",
                    )
                )
        return out


class AcceptableUse(AuditRule):
    name = "acceptable-use"
    description = "Acceptable-use policies that bind users of the release."

    def check(self, audit: AuditInput) -> list[Finding]:
        return [
            audit.finding(
                self.name,
                "info",
                key,
                f"{audit.label(key)}: its acceptable-use policy applies ({info.acceptable_use_policy})",
            )
            for key, info in audit.with_terms()
            if info.acceptable_use_policy
        ]


class BaseModelDeclared(AuditRule):
    name = "base-model"
    description = "A model release names its base model, whose terms the student inherits."

    def check(self, audit: AuditInput) -> list[Finding]:
        if audit.release.what != "model" or audit.base_model_license is not None:
            return []
        return [
            audit.finding(
                self.name,
                "acknowledge",
                None,
                "the student's base model is not declared, so its terms are not part of this audit",
                "declare it (--base-model, --base-model-license)",
            )
        ]


BUILTIN: tuple[type[AuditRule], ...] = (
    UnknownTerms,
    UseCategory,
    CompetingModels,
    ImproveOtherModels,
    DerivativeTerms,
    NamePrefix,
    UserCap,
    Notices,
    ShareAlike,
    AcceptableUse,
    BaseModelDeclared,
    TermsConflict,
    RegistryChanged,
    EmptyRelease,
)


def make_rules(
    plugins: PluginRegistry | None = None, options: dict[str, dict[str, Any]] | None = None
) -> list[AuditRule]:
    """The built-in rules, then every registered rule plugin, each with its `release.rules` options."""
    classes: dict[str, type[AuditRule]] = {c.name: c for c in BUILTIN}
    for spec in (plugins.specs.get("audit-rule", {}) if plugins is not None else {}).values():
        if spec.name in classes:
            raise ConfigError(
                f"audit rule plugin {spec.plugin!r} ({spec.package or 'no package'}) registers "
                f"{spec.name!r}, a built-in rule's name; pick another name"
            )
        classes[spec.name] = spec.cls  # type: ignore[assignment]
    options = options or {}
    for name in options:
        if name not in classes:
            close = difflib.get_close_matches(name, list(classes), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"release.rules.{name}: no audit rule of that name{hint}")
    rules = []
    for name, cls in classes.items():
        try:
            opts = cls.Options.model_validate(options.get(name, {}))
        except ValidationError as exc:
            raise ConfigError(
                format_validation_error(exc, cls.Options, prefix=f"release.rules.{name}", header=False)
            ) from None
        rules.append(cls(opts))
    return rules
