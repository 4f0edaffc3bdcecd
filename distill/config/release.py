"""What a user means to release, for what use, and what they have acknowledged.

`distill audit` checks a dataset or a student against these; the config's `release:` section
sets them for the cards written at export, and command-line flags override them. An
acknowledgement always carries a reason, because it is the user's recorded answer to a
question the software cannot decide (does the student compete with the teacher's provider?).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distill.errors import ConfigError
from distill.licenses import normalize

ReleaseUse = Literal["commercial", "research"]
ReleaseKind = Literal["data", "model"]


class Acknowledgement(BaseModel):
    """The user's answer to a finding that needs one: which rule, which license, and why."""

    model_config = ConfigDict(extra="forbid")

    rule: str = Field(description="Audit rule id, e.g. `no-competing-models` (`distill audit` lists them).")
    license: str | None = Field(None, description="License id it applies to; unset: every license of the rule.")
    reason: str = Field(description="Why it is acceptable; recorded in the audit and the cards.")
    by: str | None = Field(None, description="Who decided, for the record.")

    @field_validator("reason")
    @classmethod
    def _has_reason(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("an acknowledgement needs a reason")
        return value.strip()

    @field_validator("license")
    @classmethod
    def _valid_license(cls, value: str | None) -> str | None:
        return _normalize(value)

    def matches(self, rule: str, license: str | None) -> bool:
        return self.rule == rule and (self.license is None or self.license == license)


class ReleaseSettings(BaseModel):
    """The `release:` section: the policy a release is audited against."""

    model_config = ConfigDict(extra="forbid")

    use: ReleaseUse = Field("commercial", description="Intended use of the release: commercial or research.")
    what: ReleaseKind = Field("data", description="What is released: the data, or a model trained on it.")
    name: str | None = Field(
        None, description="Release name (dataset or model name); some licenses require a model name prefix."
    )
    base_model: str | None = Field(None, description="For a model release: the student's base model id.")
    base_model_license: str | None = Field(
        None, description="SPDX expression of the base model's terms; default: from the registry's model rules."
    )
    monthly_users: int | None = Field(
        None, ge=0, description="Expected monthly active users, checked against licenses' user caps."
    )
    acknowledge: list[Acknowledgement] = Field(default_factory=list)
    rules: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Options of audit rule plugins, by rule name."
    )

    @field_validator("base_model_license")
    @classmethod
    def _valid_license(cls, value: str | None) -> str | None:
        return _normalize(value)


def parse_ack(text: str) -> Acknowledgement:
    """`RULE[:LICENSE]=REASON`, as `--ack` takes it."""
    head, sep, reason = text.partition("=")
    if not sep or not reason.strip():
        raise ConfigError(f"--ack {text!r}: expected RULE[:LICENSE]=REASON (a reason is required)")
    rule, _, license = head.partition(":")
    if not rule.strip():
        raise ConfigError(f"--ack {text!r}: expected RULE[:LICENSE]=REASON (the rule is missing)")
    try:
        return Acknowledgement(rule=rule.strip(), license=license.strip() or None, reason=reason)
    except ValidationError as exc:
        why = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(f"--ack {text!r}: {why}") from None


def _normalize(value: str | None) -> str | None:
    if value is None:
        return None

    try:
        return normalize(value)
    except ConfigError as exc:  # pydantic only turns ValueError into a located error
        raise ValueError(str(exc)) from None
