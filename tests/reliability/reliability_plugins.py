"""Plugins the reliability suite loads into real `distill` subprocesses through a real entry point.

The suite writes a `.dist-info` folder whose `entry_points.txt` names this module in the
`distill` group and puts both on PYTHONPATH, so a child process discovers these plugins exactly
as it discovers an installed third-party package. Nothing here is imported by distill itself.

`counting-echo` answers deterministically (the text depends only on the prompt, the request
seed and the sample index) and appends one line per request it *starts* to the file named by
$DISTILL_TEST_CALL_LOG, before it answers: a request killed half way still counts as paid for.

An observer sleeps $DISTILL_TEST_EXPORT_PAUSE seconds after the export stage has committed its
shard and before the stage is sealed: writing a small export takes a few milliseconds, too short
a window to aim a kill at from another process.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

from pydantic import Field, SecretStr

from distill.filter import Filter
from distill.hookspecs import hookimpl
from distill.teacher import ChatRequest, ModelInfo, Sample, SamplingOptions, Teacher

CALL_LOG = "DISTILL_TEST_CALL_LOG"
EXPORT_PAUSE = "DISTILL_TEST_EXPORT_PAUSE"
EXPORT_STAGE = "sft"


def _log_call(text: str) -> None:
    path = os.environ.get(CALL_LOG)
    if not path:
        return
    line = (hashlib.sha256(text.encode()).hexdigest()[:12] + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one small O_APPEND write: whole lines even from several processes
    finally:
        os.close(fd)


class CountingEcho(Teacher):
    name = "counting-echo"

    class Options(SamplingOptions):
        license: str = "Apache-2.0"
        api_key: SecretStr | None = Field(
            None,
            description="Accepted and never used: lets a test check that a key given through ${VAR} leaks nowhere.",
        )
        style: str = "answer"
        delay: float = Field(0.0, ge=0, description="Seconds per request, so a kill lands mid-batch.")

    def model_info(self) -> ModelInfo:
        return ModelInfo(model="counting-echo", revision="v1", file_hash="0" * 64, license=self.options.license)

    def sampling(self) -> dict:
        return self.options.model_dump(include={"n", "temperature", "top_p", "max_tokens", "seed"})

    def _answer(self, r: ChatRequest) -> list[Sample]:
        last = r.messages[-1].content
        out = []
        for k in range(r.n or self.options.n):
            h = hashlib.sha256(f"{last}|{r.seed}|{k}".encode()).hexdigest()[:8]
            if self.options.style == "instructions":
                text = f"1. Explain how to configure router feature number {h} step by step"
            else:
                text = f"Answer {h}: " + " ".join(last.split()[:6]) + " and more" * k
            out.append(Sample(text=text, finish_reason="stop", completion_tokens=len(text.split())))
        return out

    def iter_generate(self, requests: list[ChatRequest]) -> Iterator[tuple[int, list[Sample]]]:
        for i, r in enumerate(requests):  # one at a time, as an API teacher hands results back
            _log_call(r.model_dump_json())
            if self.options.delay:
                time.sleep(self.options.delay)
            yield i, self._answer(r)

    def generate(self, requests: list[ChatRequest]) -> list[list[Sample]]:
        return [samples for _, samples in self.iter_generate(requests)]


class SlowPass(Filter):
    """Keeps a record unless its id's hash falls in `drop_share`; sleeps per batch, so a kill
    lands inside the filter stage."""

    name = "slow-pass"

    class Options(Filter.Options):
        delay: float = Field(0.0, ge=0)
        drop_share: float = Field(0.2, ge=0, le=1)

    def filter_batch(self, records):
        from distill.filter import KEEP, Drop

        if self.options.delay:
            time.sleep(self.options.delay)
        out = []
        for r in records:
            bucket = int(hashlib.sha256(r.id.encode()).hexdigest()[:4], 16) / 0xFFFF
            out.append(Drop(f"hash bucket: {bucket:.2f}") if bucket < self.options.drop_share else KEEP)
        return out


@hookimpl
def register_teachers(register) -> None:
    register(CountingEcho)


@hookimpl
def register_filters(register) -> None:
    register(SlowPass)


@hookimpl
def records_generated(stage, records) -> None:
    pause = os.environ.get(EXPORT_PAUSE)
    if pause and stage == EXPORT_STAGE:
        time.sleep(float(pause))
