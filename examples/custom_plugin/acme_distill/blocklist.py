"""A filter that drops, or masks, records that mention blocked terms: a competitor's name,
an internal codename, anything that must not reach a student.

It shows the whole filter contract. A plain filter only overrides `check(record)` and
returns True or `(False, "category: detail")`; this one overrides `filter_batch` because
its `mask` action returns `Edit` (a changed copy of the record) as well as `Keep` and
`Drop`. Reasons read `blocked term: 'NetGiant' in response`: `distill inspect` counts them
under the part before the first ": " (`acme-blocklist: blocked term`), so the detail after
it may vary without splitting the count.

It is stateless, so it needs no `restore`: every record is judged on its own.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from distill.filter import KEEP, Decision, Drop, Edit, Filter
from distill.hookspecs import Register, hookimpl
from distill.plugin import Options
from distill.records import Record


class BlocklistFilter(Filter):
    """Drop (or mask) records whose prompt or response contains a blocked word or phrase."""

    name = "acme-blocklist"

    class Options(Options):
        terms: list[str] = Field(
            min_length=1,
            description="Words or phrases to block, matched as whole words; a phrase matches across any whitespace.",
        )
        field: Literal["prompt", "response", "both"] = Field(
            "response",
            description="Where to look: the user turns, the answer (and every candidate, which a "
            "preference export would carry), or both.",
        )
        case_sensitive: bool = Field(False, description="Match case exactly.")
        action: Literal["drop", "mask"] = Field(
            "drop", description="`drop` rejects the record; `mask` replaces each match with `mask_with` and keeps it."
        )
        mask_with: str = Field("[blocked]", description="What a masked term becomes.")

        @field_validator("terms")
        @classmethod
        def _has_words(cls, terms: list[str]) -> list[str]:
            for t in terms:
                if not re.search(r"\w", t):
                    raise ValueError(f"term {t!r} has no letters or digits to match")
            return [" ".join(t.split()) for t in terms]

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        flags = 0 if self.options.case_sensitive else re.IGNORECASE
        # (?<!\w)...(?!\w) rather than \b: a term may start or end with punctuation ("C++").
        self._patterns = [
            (t, re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, t.split())) + r"(?!\w)", flags))
            for t in self.options.terms
        ]

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        return [self.decide(r) for r in records]

    def decide(self, record: Record) -> Decision:
        """Keep, Drop with `category: detail`, or Edit (mask) one record."""
        texts = self._texts(record)
        if isinstance(texts, Drop):
            return texts
        hits = [(term, where) for where, text in texts for term, pattern in self._patterns if pattern.search(text)]
        if not hits:
            return KEEP
        if self.options.action == "drop":
            term, where = hits[0]
            return Drop(f"blocked term: {term!r} in {where}")
        return Edit(self._masked(record), f"masked: {len(hits)} blocked term(s) in {self.options.field}")

    def _texts(self, record: Record) -> list[tuple[str, str]] | Drop:
        """(where, text) pairs to search; a Drop when the configured field is missing, because
        a record with nothing to check has not passed the check."""
        field = self.options.field
        out: list[tuple[str, str]] = []
        if field in ("prompt", "both"):
            prompt = [m.content for m in record.prompt() if m.role == "user"]
            if not prompt:
                return Drop("missing field: no user message to check")
            out += [("prompt", text) for text in prompt]
        if field in ("response", "both"):
            response = record.response()
            if response is None:
                return Drop("missing field: no response to check")
            out.append(("response", response))
            out += [(f"candidate {i + 1}", c.content) for i, c in enumerate(record.candidates)]
        return out

    def _mask(self, text: str) -> str:
        for _, pattern in self._patterns:
            text = pattern.sub(self.options.mask_with, text)
        return text

    def _masked(self, record: Record) -> Record:
        """A copy with every match masked where this filter looks; the original is untouched."""
        new = record.model_copy(deep=True)
        field = self.options.field
        response_at = len(new.messages) - 1 if record.response() is not None else None
        for i, m in enumerate(new.messages):
            in_prompt = m.role == "user" and field in ("prompt", "both")
            is_response = i == response_at and field in ("response", "both")
            if in_prompt or is_response:
                m.content = self._mask(m.content)
        if field in ("response", "both"):
            for c in new.candidates:
                c.content = self._mask(c.content)
        return new


@hookimpl
def register_filters(register: Register) -> None:
    register(BlocklistFilter)
