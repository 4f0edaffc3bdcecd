"""Quality heuristics: length bounds, refusals and self-identification, empty or
truncated answers, repeated n-grams."""

from __future__ import annotations

from pydantic import Field, model_validator

from distill.filter import Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options
from distill.records import Record
from distill_plugins._text import MissingField, TextField, field_text


class LengthFilter(Filter):
    """Drop records whose prompt or response is outside word-count bounds."""

    name = "length"

    class Options(Options):
        field: TextField = Field("response", description="Which text to measure.")
        min_words: int = Field(1, ge=0)
        max_words: int | None = Field(None, ge=1)

        @model_validator(mode="after")
        def _bounds(self) -> "LengthFilter.Options":
            if self.max_words is not None and self.max_words < self.min_words:
                raise ValueError("max_words must be >= min_words")
            return self

    def check(self, record: Record) -> bool | tuple[bool, str]:
        try:
            words = len(field_text(record, self.options.field).split())
        except MissingField as exc:
            return False, exc.drop().reason
        if words < self.options.min_words:
            return False, f"{self.options.field} too short: {words} < {self.options.min_words} words"
        if self.options.max_words is not None and words > self.options.max_words:
            return False, f"{self.options.field} too long: {words} > {self.options.max_words} words"
        return True


@hookimpl
def register_filters(register) -> None:
    register(LengthFilter)
