"""The evaluator interface: score what several models answered on a held-out set.

The `evaluate` stage, not the evaluator, gets the answers: every contender (the untrained
base model, the prompted teacher, the student) answers the same held-out prompts through
the request cache, so a re-run costs nothing and every evaluator scores the same text. An
evaluator then returns one score per contender and, where it can, one per item, which is
what the error analysis ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from distill.plugin import Plugin

if TYPE_CHECKING:
    from distill.cache.calls import TeacherCaller
    from distill.records import Message


@dataclass
class EvalItem:
    """One held-out question: the conversation before the answer, and a reference answer if
    the data has one (perplexity needs it; a rubric may not)."""

    id: str
    messages: list[Message]
    reference: str | None = None
    #: The data file's other columns (`topic: off`), shown in the report and usable by rubrics.
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")


@dataclass
class Contender:
    """A model under evaluation and what it answered, one answer per item."""

    name: str
    #: `model` (a base model), `teacher` (a configured teacher) or `student` (a train stage's output).
    kind: str
    #: The model's id as provenance records it.
    model: str
    answers: list[str]
    #: Local weights, where there are any: what perplexity loads.
    model_path: Path | None = None
    #: The system prompt it answered with (None: none, as a student is meant to be used).
    system_prompt: str | None = None
    #: The start of every answer it was given (assistant prefill), as a teacher wrote the data.
    prefix: str | None = None
    #: Answers sampled per item; above 1, `ranker` chose among them at inference time.
    best_of: int = 1
    ranker: str | None = None


@dataclass
class EvalScores:
    """An evaluator's result. `per_item[contender][i]` is None where an item could not be scored."""

    scores: dict[str, float]
    per_item: dict[str, list[float | None]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalContext:
    """What the stage lends evaluators beyond the answers."""

    base_dir: Path
    #: A configured teacher (by its `teachers:` key) behind the request cache: judges use it.
    teacher: Callable[[str], TeacherCaller]
    progress: bool = True


class Evaluator(Plugin):
    """Scores contenders' answers on held-out items. Subclasses implement `evaluate`."""

    kind: ClassVar[str] = "evaluator"
    #: Whether a larger score is better (perplexity: no). The report and the error analysis read it.
    higher_is_better: ClassVar[bool] = True
    #: One line for the report's table.
    description: ClassVar[str] = ""

    def evaluate(self, items: list[EvalItem], contenders: list[Contender], context: EvalContext) -> EvalScores:
        raise NotImplementedError  # pragma: no cover - interface


def worst_items(items: list[EvalItem], per_item: list[float | None], higher_is_better: bool, limit: int) -> list[str]:
    """Ids of the `limit` worst-scored items: what the error-analysis table shows first."""
    scored = [(s, i) for i, s in enumerate(per_item) if s is not None]
    scored.sort(key=lambda t: (t[0] if higher_is_better else -t[0], t[1]))
    return [items[i].id for _, i in scored[:limit]]
