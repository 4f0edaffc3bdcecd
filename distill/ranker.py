"""Rankers score a record's candidates; the core does everything else.

A ranker returns one score per candidate (or a rejection). The core writes the scores,
makes the best candidate the record's answer, records any judge model in provenance like
any generator, and `Record.preference()` derives the chosen/rejected pair and its margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from distill.plugin import Plugin
from distill.records import Candidate, Generator, Record
from distill.task import Reject

if TYPE_CHECKING:
    from distill.cache.calls import TeacherCaller


@dataclass
class Judge:
    """A teacher lent to a ranker: its calls go through the core's cache like any other."""

    caller: TeacherCaller
    where: str
    #: What this judge was asked (the core gives each batch its own judge, to count per shard).
    requests: int = 0
    hits: int = 0

    def ask(self, requests):
        pending = self.caller.submit(requests, self.where)
        self.requests += len(requests)
        self.hits += pending.hits
        return pending.result()

    def for_batch(self) -> Judge:
        return Judge(self.caller, self.where)


def candidates_of(record: Record) -> list[Candidate]:
    """The record's candidates, or its single answer as the only candidate."""
    if record.candidates:
        return record.candidates
    answer = record.response()
    return [Candidate(content=answer)] if answer is not None else []


class Ranker(Plugin):
    kind: ClassVar[str] = "ranker"
    #: Rankers that need a judge model say so; the config must then name a teacher.
    needs_judge: ClassVar[bool] = False
    #: True when `score_batch` keeps no state between calls, so the core may score the next
    #: batches on other threads while a judge answers the current one (a judge that serves
    #: overlapping calls then never idles at a batch boundary). Leave False otherwise.
    concurrent_batches: ClassVar[bool] = False

    def generators(self) -> list[Generator]:
        """Models the ranker runs itself (a reward model), recorded as judges of every record it
        ranks, so their terms reach the records' license tags. A judge teacher is recorded by the core."""
        return []

    def score_batch(self, records: list[Record], judge: Judge | None) -> list[list[float] | Reject]:
        """One score per candidate (in `candidates_of` order), or a Reject, per record."""
        raise NotImplementedError  # pragma: no cover
