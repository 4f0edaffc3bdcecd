"""First-party basic filters: length bounds and exact deduplication.

The filters issue adds MinHash, semantic dedup, PII, decontamination and license policy.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import Field, model_validator

from distill.filter import KEEP, Decision, Drop, Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options
from distill.records import Record

Field_ = Literal["prompt", "response", "both"]


def text_of(record: Record, field: Field_) -> str:
    prompt = " ".join(m.content for m in record.prompt() if m.role == "user")
    response = record.response() or ""
    return {"prompt": prompt, "response": response, "both": f"{prompt}\n{response}"}[field]


class LengthFilter(Filter):
    """Drop records whose prompt or response is outside word-count bounds."""

    name = "length"

    class Options(Options):
        field: Field_ = Field("response", description="Which text to measure.")
        min_words: int = Field(1, ge=0)
        max_words: int | None = Field(None, ge=1)

        @model_validator(mode="after")
        def _bounds(self) -> "LengthFilter.Options":
            if self.max_words is not None and self.max_words < self.min_words:
                raise ValueError("max_words must be >= min_words")
            return self

    def check(self, record: Record) -> bool | tuple[bool, str]:
        words = len(text_of(record, self.options.field).split())
        if words < self.options.min_words:
            return False, f"{self.options.field} too short: {words} < {self.options.min_words} words"
        if self.options.max_words is not None and words > self.options.max_words:
            return False, f"{self.options.field} too long: {words} > {self.options.max_words} words"
        return True


_PUNCT = re.compile(r"[^\w\s]")


class ExactDedup(Filter):
    """Drop records whose normalised text (case, whitespace, punctuation) was already kept."""

    name = "exact-dedup"

    class Options(Options):
        field: Field_ = Field("prompt", description="Dedupe on the prompt, the response, or both.")

    def __init__(self, options=None, **kwargs) -> None:
        super().__init__(options, **kwargs)
        self.seen: dict[str, str] = {}

    def key(self, record: Record) -> str:
        text = " ".join(_PUNCT.sub(" ", text_of(record, self.options.field).lower()).split())
        return hashlib.sha1(text.encode()).hexdigest()

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        out: list[Decision] = []
        for r in records:
            k = self.key(r)
            first = self.seen.get(k)
            if first is None:
                self.seen[k] = r.id
                out.append(KEEP)
            else:
                out.append(Drop(f"duplicate: same normalised {self.options.field} as record {first}"))
        return out

    def restore(self, kept: list[Record]) -> None:
        for r in kept:
            self.seen.setdefault(self.key(r), r.id)


@hookimpl
def register_filters(register) -> None:
    register(LengthFilter)
    register(ExactDedup)
