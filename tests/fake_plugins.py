"""In-process plugins for unit tests of core logic (never the only test of a real plugin)."""

from __future__ import annotations

import hashlib
import json

from pydantic import SecretStr

from distill.filter import Filter
from distill.hookspecs import hookimpl
from distill.teacher import ChatRequest, ModelInfo, Sample, SamplingOptions, Teacher


class EchoTeacher(Teacher):
    """Deterministic: the answer depends only on the prompt and the request seed."""

    name = "echo"
    calls: list[int] = []  # batch sizes of every generate call, across instances
    #: Raise on this (1-based) call; a class attribute, not an option, so that the config
    #: (and so the stage digest) is the same in the crashing run and the resumed one.
    crash_at: int | None = None

    class Options(SamplingOptions):
        license: str = "Apache-2.0"
        api_key: SecretStr | None = None
        style: str = "answer"

    def model_info(self) -> ModelInfo:
        return ModelInfo(model="echo-model", revision="v1", file_hash="0" * 64, license=self.options.license)

    def sampling(self) -> dict:
        return self.options.model_dump(include={"n", "temperature", "top_p", "max_tokens", "seed"})

    def generate(self, requests: list[ChatRequest]) -> list[list[Sample]]:
        EchoTeacher.calls.append(len(requests))
        if EchoTeacher.crash_at is not None and len(EchoTeacher.calls) == EchoTeacher.crash_at:
            raise RuntimeError("simulated engine crash")
        out = []
        for r in requests:
            last = r.messages[-1].content
            samples = []
            for k in range(r.n or self.options.n):
                h = hashlib.sha256(f"{last}|{r.seed}|{k}".encode()).hexdigest()[:8]
                if self.options.style == "judge":  # a judge that likes longer answers, in JSON
                    content = r.messages[-1].content
                    if "Answer A:" in content:
                        a = content.split("Answer A:")[1].split("Answer B:")[0]
                        b = content.split("Answer B:")[1].split("Reply with")[0]
                        text = json.dumps({"winner": "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"})
                    else:
                        answer = content.split("Answer:")[1].split("Reply with")[0]
                        text = json.dumps({"score": min(10, max(1, len(answer.split())))})
                elif self.options.style == "instructions":
                    text = f"1. Explain how to configure router feature number {h} step by step"
                else:
                    text = f"Answer {h}: " + " ".join(last.split()[:5]) + " and more" * k
                samples.append(Sample(text=text, finish_reason="stop", completion_tokens=len(text.split())))
            out.append(samples)
        return out


class CrashingFilter(Filter):
    name = "crashing"

    def check(self, record):
        raise ValueError("boom")


class Recorder:
    """An observer that remembers what it saw."""

    def __init__(self) -> None:
        self.generated: list[tuple[str, int]] = []
        self.dropped: list[tuple[str, int]] = []
        self.finished: list[tuple[str, dict]] = []

    @hookimpl
    def records_generated(self, stage, records):
        self.generated.append((stage, len(records)))

    @hookimpl
    def records_dropped(self, stage, records):
        self.dropped.append((stage, len(records)))

    @hookimpl
    def stage_finished(self, stage, stats):
        self.finished.append((stage, stats))


class BrokenObserver:
    @hookimpl
    def stage_finished(self, stage, stats):
        raise RuntimeError("observer exploded")


class FakePlugins:
    @hookimpl
    def register_teachers(self, register):
        register(EchoTeacher)

    @hookimpl
    def register_filters(self, register):
        register(CrashingFilter)
