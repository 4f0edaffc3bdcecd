"""What the core gives filters: the whole input when asked, the seed set, and counts of
their edits next to their drops."""

from __future__ import annotations

import pytest
from util import QUESTIONS, config_dict, pipeline

from distill.errors import ConfigError
from distill.filter import KEEP, Drop, Edit, Filter
from distill.hookspecs import hookimpl
from distill.io.inspect import inspect_output
from distill.records import Message


class ShortestOnly(Filter):
    """Keeps only the record with the shortest prompt of the whole stage: it cannot decide
    any batch before it has seen every record."""

    name = "shortest-only"

    def needs_whole_input(self) -> bool:
        return True

    def prepare(self, records):
        self.winner = min(records, key=lambda r: (len(r.messages[-1].content), r.id)).id

    def filter_batch(self, records):
        return [KEEP if r.id == self.winner else Drop(f"not shortest: {r.id}") for r in records]


class SeedAware(Filter):
    """Drops records whose prompt is not a seed prompt; shows what `context.seeds` holds."""

    name = "seed-aware"

    def setup(self, context):
        self.prompts = {s.messages[0].content for s in context.seeds()}

    def check(self, record):
        return record.messages[0].content in self.prompts, "not a seed"


class Shouter(Filter):
    name = "shouter"

    def filter_batch(self, records):
        out = []
        for r in records:
            edited = r.model_copy(deep=True)
            edited.messages = [Message(role=m.role, content=m.content.upper()) for m in r.messages]
            out.append(Edit(edited, "upper-cased: every message"))
        return out


class Plugins:
    @hookimpl
    def register_filters(self, register):
        for cls in (ShortestOnly, SeedAware, Shouter):
            register(cls)


def _filter_only(tmp_path, filters, batch_size=2):
    cfg = config_dict(tmp_path)
    cfg["stages"] = [{"kind": "filter", "name": "clean", "batch_size": batch_size, "filters": filters}]
    return cfg


def test_a_whole_input_filter_decides_across_batches(tmp_path):
    pipeline(_filter_only(tmp_path, ["shortest-only"]), ("core-test", Plugins())).run()
    (report,) = [r for r in inspect_output(tmp_path / "out") if r.stage == "clean"]
    assert report.totals["kept"] == 1 and report.totals["rejected"] == len(QUESTIONS) - 1
    assert report.reasons == {"shortest-only: not shortest": len(QUESTIONS) - 1}


def test_a_whole_input_filter_must_come_first(tmp_path):
    with pytest.raises(ConfigError, match="filter 'shortest-only'.*must be the stage's first filter"):
        pipeline(_filter_only(tmp_path, ["shouter", "shortest-only"]), ("core-test", Plugins())).run()


def test_filters_see_the_seed_set_and_edits_are_counted(tmp_path):
    pipeline(_filter_only(tmp_path, ["seed-aware", "shouter"]), ("core-test", Plugins())).run()
    (report,) = [r for r in inspect_output(tmp_path / "out") if r.stage == "clean"]
    assert report.totals["kept"] == len(QUESTIONS) and report.reasons == {}
    assert report.edits == {"shouter: upper-cased": len(QUESTIONS)}
