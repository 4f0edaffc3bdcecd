"""The one thing that moves through a pipeline: a chat record with its provenance.

Records are plain pydantic models so that every shard line can be validated on read and the
JSON Schema in `schemas/record.schema.json` can be generated from them for other tools.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
Action = Literal["loaded", "generated", "ranked", "kept", "dropped", "edited"]
UseCategory = Literal["commercial", "unspecified", "non-commercial", "academic-only"]

#: Least to most restrictive (Data Provenance Initiative); combining takes the maximum.
USE_ORDER: tuple[UseCategory, ...] = ("commercial", "unspecified", "non-commercial", "academic-only")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Strict):
    role: Role
    content: str


class Candidate(_Strict):
    """One of several responses to the same prompt, scored by a ranker."""

    content: str
    score: float | None = None
    #: Index into `provenance.generators` of the model that wrote this candidate.
    generator: int | None = None
    finish_reason: str | None = None


class Source(_Strict):
    """A seed row a record derives from, with the license it was declared under."""

    dataset: str
    row: int | None = None
    license: str = Field(description="SPDX expression the source was declared under.")


class Generator(_Strict):
    """A model that wrote or judged part of a record, identified well enough to check its terms."""

    role: Literal["generator", "judge", "editor"] = "generator"
    plugin: str
    plugin_version: str | None = None
    model: str
    revision: str | None = None
    file_hash: str | None = Field(default=None, description="sha256 of the weight file, when known.")
    license: str = Field(description="SPDX expression of the model's terms.")
    terms_source: str | None = Field(
        default=None, description="How the terms were found: a declaration, the model's own metadata, a rule."
    )
    model_says: str | None = Field(
        default=None,
        description="Terms the model declares about itself that contradict `license` "
        "(a declaration); the audit asks for an acknowledgement.",
    )
    sampling: dict[str, Any] = Field(default_factory=dict)


class Event(_Strict):
    stage: str
    plugin: str | None = None
    plugin_version: str | None = None
    action: Action
    reason: str | None = None
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))


class LicenseTag(_Strict):
    """The effective license of a record: everything that touched it, combined."""

    expression: str = "LicenseRef-Unspecified"
    use: UseCategory = "unspecified"
    attribution: bool = False
    share_alike: bool = False
    #: Output restrictions such as `no-competing-models` or `derivative-inherits-terms`.
    restrictions: list[str] = Field(default_factory=list)
    notices: list[str] = Field(default_factory=list)
    name_prefixes: list[str] = Field(default_factory=list)
    #: License ids the registry did not know; they count as the most restrictive use.
    unknown: list[str] = Field(default_factory=list)


class Provenance(_Strict):
    sources: list[Source] = Field(default_factory=list)
    generators: list[Generator] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    license: LicenseTag = Field(default_factory=LicenseTag)


class Preference(_Strict):
    chosen: str
    rejected: str
    margin: float


class Record(_Strict):
    id: str
    messages: list[Message]
    candidates: list[Candidate] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=Provenance)

    def prompt(self) -> list[Message]:
        """The conversation up to (not including) a trailing assistant answer."""
        msgs = list(self.messages)
        while msgs and msgs[-1].role == "assistant":
            msgs.pop()
        return msgs

    def response(self) -> str | None:
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[-1].content
        return None

    def preference(self) -> Preference | None:
        """Best and worst scored candidates; None unless two candidates have distinct scores."""
        scored = [c for c in self.candidates if c.score is not None]
        if len(scored) < 2:
            return None
        best = max(scored, key=lambda c: c.score)  # type: ignore[arg-type,return-value]
        worst = min(scored, key=lambda c: c.score)  # type: ignore[arg-type,return-value]
        margin = float(best.score) - float(worst.score)  # type: ignore[arg-type]
        if margin <= 0:
            return None
        return Preference(chosen=best.content, rejected=worst.content, margin=margin)

    def add_event(
        self,
        stage: str,
        action: Action,
        *,
        plugin: str | None = None,
        plugin_version: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.provenance.events.append(
            Event(stage=stage, action=action, plugin=plugin, plugin_version=plugin_version, reason=reason)
        )

    def add_generator(self, generator: Generator) -> int:
        """Add a generator once and return its index, so candidates can point to it."""
        for i, g in enumerate(self.provenance.generators):
            if g == generator:
                return i
        self.provenance.generators.append(generator)
        return len(self.provenance.generators) - 1

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)


def stable_id(*parts: Any) -> str:
    """A short content-derived id: the same inputs give the same id on every run and resume."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return h[:20]
