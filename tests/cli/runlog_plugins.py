"""A filter for the run-log tests, loaded into real `distill run` subprocesses through an entry
point (as `tests/reliability` loads its plugins).

`bar-pass` draws a tqdm bar over each batch, as third-party libraries do, so a run whose lines
let library bars through fails the test; it is slow enough per batch that a stage spans
several progress intervals; and it drops one record with a reason that quotes the value of
$RUNLOG_TEST_API_KEY, so the test can check that the log's lines never show it.
"""

from __future__ import annotations

import os
import time

from pydantic import Field
from tqdm import tqdm

from distill.filter import KEEP, Drop, Filter
from distill.hookspecs import hookimpl

ENTRY_POINT = "runlog-test"
SECRET_ENV = "RUNLOG_TEST_API_KEY"
BAR_TEXT = "third-party bar"


class BarPass(Filter):
    name = "bar-pass"

    class Options(Filter.Options):
        delay: float = Field(0.0, ge=0, description="Seconds per batch.")

    def filter_batch(self, records):
        out = []
        for i, _ in enumerate(tqdm(records, desc=BAR_TEXT, mininterval=0)):
            time.sleep(self.options.delay / max(1, len(records)))
            first = i == 0 and not getattr(self, "_dropped", False)
            if first:
                self._dropped = True
                out.append(Drop(f"quotes the key {os.environ.get(SECRET_ENV, '')}"))
            else:
                out.append(KEEP)
        return out


@hookimpl
def register_filters(register) -> None:
    register(BarPass)
