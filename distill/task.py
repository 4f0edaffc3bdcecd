"""Tasks say what to ask a teacher and how to read its answer.

Two shapes cover the work: a `MapTask` turns each input record into one output record
(answer this instruction), an `ExpandTask` grows new records from a pool (self-instruct).
Tasks never assign ids, stamp provenance or write files: the core does, so a task cannot
lose a record or forget where it came from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from distill.plugin import Plugin
from distill.records import Message, Record
from distill.teacher import Sample


@dataclass(frozen=True)
class Reject:
    """A task's verdict that an input or an answer cannot be used, and why."""

    reason: str


@dataclass(frozen=True)
class PassThrough:
    """A map task's verdict that an input needs no teacher call (it is already answered, say):
    the record is kept unchanged, with the reason in its events."""

    reason: str


@dataclass
class Proposal:
    """A prompt for the teacher in an expand task, with the records it was built from."""

    messages: list[Message]
    parents: list[Record] = field(default_factory=list)
    #: Stamped on every record made from this proposal's answers, so a task that works in
    #: steps (Evol-Instruct's generations) finds its bookkeeping in the pool after a resume.
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Have the teacher continue the final message rather than answer it (`ChatRequest.continue_final`).
    continue_final: bool = False


class Task(Plugin):
    kind: ClassVar[str] = "task"


class MapTask(Task):
    def build(self, record: Record) -> list[Message] | Reject | PassThrough:
        """The messages to send for this record, a rejection of the input, or a pass-through."""
        raise NotImplementedError  # pragma: no cover

    def apply(self, record: Record, samples: list[Sample], generator: int) -> Record | Reject:
        """Write the teacher's samples into the record (`generator` indexes provenance)."""
        raise NotImplementedError  # pragma: no cover

    def response_format(self, record: Record) -> dict[str, Any] | None:
        """Structured output for this record's request (`{"type": "json_schema", ...}` as in the
        OpenAI API): teachers that can enforce it do; `apply` still validates what comes back."""
        return None


class ExpandTask(Task):
    #: Whether the input pool passes through to the output (self-instruct keeps its seeds).
    keep_inputs: bool = True

    def target(self) -> int:
        """How many new records the stage should produce."""
        raise NotImplementedError  # pragma: no cover

    def propose(self, pool: list[Record], count: int, rng: random.Random) -> list[Proposal]:
        """`count` prompts built from the pool (inputs plus what has been generated so far)."""
        raise NotImplementedError  # pragma: no cover

    def parse(self, proposal: Proposal, sample: Sample) -> list[list[Message]] | Reject:
        """New conversations read from one sample, or why the sample is unusable."""
        raise NotImplementedError  # pragma: no cover

    def accept(self, pool: list[Record], messages: list[Message]) -> Reject | None:
        """A last check against the pool (e.g. exact repeats); None accepts."""
        return None
