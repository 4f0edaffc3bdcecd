"""Answer the records a rule picks out with a fixed text: written by a rule, not by a model.

Practitioners teach a task's refusals and redirects this way: a classifier says which
questions are out of scope, and those get the task's fixed answer verbatim, so the student
sees both behaviours without trusting a teacher to write an exact sentence. The classifier is
any function the config names (a keyword rule, a small trained classifier, a call to a
service); the answer is the config author's own text.

The record's events say which rule wrote its answer ("edited", with the rule and the text),
and its candidates are cleared, so no ranker or preference pair mistakes a teacher's earlier
answer for it. Like a PII redaction, an answer written by code adds no model terms to the
record's license tag: the text is the config author's.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import Field

from distill.filter import KEEP, Decision, Drop, Edit, Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options, PluginContext
from distill.records import Message, Record
from distill.seeding import derive_seed
from distill_plugins.rankers import is_file_spec, load_callable


class RuleAnswer(Filter):
    """Records the `when` function picks out get `answer` as their answer."""

    name = "rule-answer"

    class Options(Options):
        when: str = Field(
            description="'package.module:function' or 'path/to/file.py:function' (relative to the config): "
            "`f(prompt, **kwargs) -> bool` with `prompt` the conversation as a list of message dicts; "
            "a function that takes `fields` also gets the record's seed fields.",
        )
        negate: bool = Field(False, description="Answer the records the function says False for.")
        kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for `when`.")
        answer: str = Field(min_length=1, description="The answer the rule writes, verbatim.")
        replace: bool = Field(
            True,
            description="Replace an answer the record already has (a seed's, a teacher's); "
            "false: answer only unanswered records.",
        )
        otherwise: Literal["keep", "drop"] = Field(
            "keep", description="What happens to the records the rule does not answer."
        )
        keep_share: float = Field(
            1.0,
            gt=0.0,
            le=1.0,
            description="Share of the records the rule would answer that are kept (the rest are dropped): "
            "when most generated questions are off-topic, a student trained on all of them learns to "
            "redirect everything. Chosen by a hash of the record id, so a resumed run drops the same ones.",
        )

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._fn = None if is_file_spec(self.options.when) else self._load(None)

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        if self._fn is None:
            self._fn = self._load(context.base_dir)

    def _load(self, base_dir: Any) -> Any:
        fn = load_callable(self.options.when, base_dir, what="rule-answer `when` function")
        try:
            self._fields = "fields" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            self._fields = False
        return fn

    def matches(self, record: Record) -> bool:
        assert self._fn is not None
        kwargs = dict(self.options.kwargs)
        if self._fields:
            kwargs["fields"] = dict(record.metadata.get("fields", {}))
        verdict = self._fn([m.model_dump() for m in record.prompt()], **kwargs)
        if not isinstance(verdict, bool):
            raise TypeError(f"{self.options.when} returned {type(verdict).__name__}, not a bool")
        return verdict != self.options.negate

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        o = self.options
        out: list[Decision] = []
        for r in records:
            if not self.matches(r):
                out.append(KEEP if o.otherwise == "keep" else Drop(f"not answered by rule: {o.when} did not pick it"))
            elif r.response() is not None and not o.replace:
                out.append(KEEP)
            elif o.keep_share < 1.0 and derive_seed("rule-answer", o.when, r.id) >= o.keep_share * 2**63:
                out.append(Drop(f"rule {o.when} picked it; beyond keep_share {o.keep_share:g}"))
            else:
                edited = r.model_copy(deep=True)
                edited.messages = r.prompt() + [Message(role="assistant", content=o.answer)]
                edited.candidates = []
                edited.metadata["answered_by"] = f"rule: {o.when}"
                out.append(Edit(edited, f"answered by rule {o.when} (not a model): {o.answer!r}"))
        return out


@hookimpl
def register_filters(register) -> None:
    register(RuleAnswer)
