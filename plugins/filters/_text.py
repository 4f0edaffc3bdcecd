"""The text a filter looks at, shared by every first-party filter so they agree on it.

A record's *instruction* is its user turns (system prompts are configuration, not content);
its *response* is the trailing assistant turn. A filter asked to read a field the record does
not have gets `MissingField`, which it turns into a drop with that reason rather than
comparing or measuring an empty string as if it were text.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from distill.filter import Drop
from distill.records import Record

#: Which text of a record a filter reads: the instruction, the response, or both joined.
TextField = Literal["prompt", "response", "both"]

_PUNCT = re.compile(r"[^\w\s]")
_WORD = re.compile(r"\w+")


class MissingField(ValueError):
    """The record lacks the text a filter was configured to read."""

    def drop(self) -> Drop:
        return Drop(f"missing field: {self}")


def field_text(record: Record, field: TextField) -> str:
    """The record's text for `field`; raises MissingField when that part is absent or blank."""
    prompt = "\n".join(m.content for m in record.prompt() if m.role == "user")
    response = record.response()
    if field in ("prompt", "both") and not prompt.strip():
        raise MissingField("no instruction (user message) to read")
    if field in ("response", "both") and (response is None or not response.strip()):
        raise MissingField("no response to read" if response is None else "empty response")
    if field == "prompt":
        return prompt
    if field == "response":
        return response or ""
    return f"{prompt}\n{response}"


def text_or_drop(record: Record, field: TextField) -> str | Drop:
    """`field_text`, or the drop for a record without the field: the form an executor that
    reads records apart from the filter (`DistributedDedup.read`) takes it in."""
    try:
        return field_text(record, field)
    except MissingField as exc:
        return exc.drop()


def normalize(text: str) -> str:
    """Case, Unicode compatibility forms, punctuation and whitespace folded away: the form
    exact and near-duplicate detection compare."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", text).split())


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits of any script)."""
    return _WORD.findall(text.casefold())


def is_generated(record: Record) -> bool:
    """Whether the record's instruction was written by a teacher (an expand task such as
    self-instruct) rather than taken from a seed. Comparisons with the seed set apply only to
    these: a seed's own record always matches its seed."""
    return "generated_by" in record.metadata
