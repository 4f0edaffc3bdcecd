"""Filters on what a rank stage found: keep a record only when its best candidate is good
enough, and (for preference data) only when its best and worst candidates are far enough apart.

Ranking picks the best of n samples; this is what makes it count: a question none of whose
samples passed the rubric is dropped, with the score in the reason, instead of teaching the
student the best of several wrong answers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.filter import Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options
from distill.records import Record


class ScoreFilter(Filter):
    name = "min-score"

    class Options(Options):
        min_score: float | None = Field(None, description="Drop records whose best candidate scored below this.")
        min_margin: float | None = Field(
            None,
            ge=0.0,
            description="Drop records whose best and worst candidates differ by less (no preference to learn).",
        )
        unscored: Literal["keep", "drop"] = Field(
            "drop",
            description="Records without scored candidates (seed answers kept as they were, a "
            "single sample): keep them, or drop them as unranked.",
        )

    def check(self, record: Record) -> bool | tuple[bool, str]:
        o = self.options
        scores = [c.score for c in record.candidates if c.score is not None]
        if not scores:
            return True if o.unscored == "keep" else (False, "unranked: no scored candidates")
        best, worst = max(scores), min(scores)
        if o.min_score is not None and best < o.min_score:
            return False, f"low score: best of {len(scores)} is {best:g}, below {o.min_score:g}"
        if o.min_margin is not None and best - worst < o.min_margin:
            return False, f"small margin: best {best:g} and worst {worst:g} differ by less than {o.min_margin:g}"
        return True


@hookimpl
def register_filters(register) -> None:
    register(ScoreFilter)
