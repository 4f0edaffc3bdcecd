"""Requests across batch boundaries: a teacher that serves overlapping calls is given the next
batches' requests while the current batch's last ones finish, and the stage still commits
whole shards in order, caches every answer as it arrives, and resumes without paying twice.

The teacher here is an in-process one whose requests sleep for a set time on a shared pool of
slots, like an API client's semaphore (the real client is exercised against a real server in
tests/plugins/test_openai_teacher.py and the reliability suite)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

import pytest

from distill.cache.calls import TeacherCaller
from distill.cache.store import RequestCache
from distill.errors import PluginError
from distill.executor.local import StageContext
from distill.executor.teachers import run_map, run_rank
from distill.io.store import StageStore, read_shards
from distill.ranker import Judge
from distill.records import Message, Record
from distill.teacher import ChatRequest, ModelInfo, Sample, SamplingOptions, Teacher
from distill_plugins.rankers import JudgeRanker
from distill_plugins.tasks import ResponseTask

SLOW = 0.4
FAST = 0.03


class SlotTeacher(Teacher):
    """Answers each request after a delay its text asks for ("slow" ones take SLOW seconds),
    `slots` at a time across all concurrent calls; logs when each request ran."""

    name = "slots"

    class Options(SamplingOptions):
        slots: int = 4
        overlap: bool = True
        fail_on: str | None = None
        answer: str = "answer to {q}"

    def __init__(self, options=None, **kwargs) -> None:
        super().__init__(options, **kwargs)
        self.sem = threading.Semaphore(self.options.slots)
        self.log: list[tuple[str, float, float]] = []
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def model_info(self) -> ModelInfo:
        return ModelInfo(model="slot-model", license="Apache-2.0")

    def requests_in_flight(self) -> int:
        return self.options.slots if self.options.overlap else 0

    def _one(self, req: ChatRequest) -> list[Sample]:
        q = req.messages[-1].content
        with self.sem:
            start = time.monotonic()
            with self.lock:
                self.asked.append(q)
            time.sleep(SLOW if "slow" in q else FAST)
            if self.options.fail_on and self.options.fail_on in q:
                raise RuntimeError(f"server error on {q!r}")
            with self.lock:
                self.log.append((q, start, time.monotonic()))
        return [Sample(text=self.options.answer.replace("{q}", q), completion_tokens=3)]

    def generate(self, requests):
        return [s for _, s in sorted(self.iter_generate(requests))]

    def iter_generate(self, requests) -> Iterator[tuple[int, list[Sample]]]:
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            futures = {pool.submit(self._one, r): i for i, r in enumerate(requests)}
            for f in as_completed(futures):
                yield futures[f], f.result()


def records(n: int, batch_size: int) -> list[Record]:
    """One slow request at the start of every batch, the rest fast."""
    return [
        Record(
            id=f"r{i:03d}",
            messages=[Message(role="user", content=f"q{i:03d}" + (" slow" if i % batch_size == 0 else ""))],
        )
        for i in range(n)
    ]


def run(tmp_path, teacher: Teacher, inputs: list[Record], batch_size: int, cache: RequestCache | None = None):
    store = StageStore(tmp_path / "out", "answers", "generate", "digest")
    ctx = StageContext(stage="answers", store=store, run_seed=0, notify=lambda *a: None)
    caller = TeacherCaller(teacher, cache)
    task = ResponseTask()
    run_map(ctx, task, caller, inputs, batch_size)
    store.finish({})
    return store, caller


def batch_of(q: str) -> int:
    return int(q[1:4]) // 4


def idle_slot_seconds(log: list[tuple[str, float, float]], slots: int) -> float:
    """Slot-seconds left unused between the first request's start and the last one's: what a
    runner that waits at batch boundaries wastes (the tail after the last start is not a
    runner's to fill)."""
    events = sorted([(start, 1) for _, start, _ in log] + [(end, -1) for _, _, end in log])
    last_start = max(start for _, start, _ in log)
    idle, running, t = 0.0, 0, events[0][0]
    for when, step in events:
        if when > last_start:
            break
        idle += (slots - running) * (when - t)
        running, t = running + step, when
    return idle


def test_next_batches_are_asked_while_the_slowest_request_of_a_batch_runs(tmp_path):
    teacher = SlotTeacher(slots=4)
    inputs = records(24, 4)
    store, caller = run(tmp_path / "overlap", teacher, inputs, 4)

    ran = {q: (start, end) for q, start, end in teacher.log}
    # the next batch was asked while the first batch's slow request still ran
    assert min(start for q, (start, _) in ran.items() if batch_of(q) == 1) < ran["q000 slow"][1]
    # committed in order, whole, one shard per batch, each with its own call counts
    shards = store.manifest.shards
    assert [s.kept for s in shards] == [4] * 6
    assert [s.meta["requests"] for s in shards] == [4] * 6
    kept = list(read_shards(store.dir, [s.kept_file for s in shards]))
    assert [r.id for r in kept] == [r.id for r in inputs]
    assert caller.stats.requests == 24 and caller.stats.hits == 0

    # the same records, and the same answers, as a teacher taking one call at a time
    sequential = SlotTeacher(slots=4, overlap=False)
    store2, _ = run(tmp_path / "sequential", sequential, inputs, 4)
    kept2 = list(read_shards(store2.dir, [s.kept_file for s in store2.manifest.shards]))
    assert [r.model_dump(exclude={"provenance"}) for r in kept] == [r.model_dump(exclude={"provenance"}) for r in kept2]
    ran2 = {q: (start, end) for q, start, end in sequential.log}
    for b in range(1, 6):  # without overlap, nothing of a batch starts before the last one ended
        prev_end = max(end for q, (_, end) in ran2.items() if batch_of(q) == b - 1)
        assert min(start for q, (start, _) in ran2.items() if batch_of(q) == b) >= prev_end
    # waiting at each boundary leaves three slots idle behind each slow request; overlapping does not
    idle, idle_sequential = idle_slot_seconds(teacher.log, 4), idle_slot_seconds(sequential.log, 4)
    assert idle_sequential > 5 * 3 * (SLOW - FAST) * 0.8
    assert idle < idle_sequential / 3, (idle, idle_sequential)


def test_a_failed_batch_commits_those_before_it_and_a_resume_pays_nothing_twice(tmp_path):
    inputs = records(24, 4)
    cache = RequestCache(tmp_path / "cache.sqlite")
    failing = SlotTeacher(slots=4, fail_on="q009")  # batch 2
    with pytest.raises(PluginError, match=r"teacher plugin 'slots' failed on batch 2 of stage 'answers'.*q009"):
        run(tmp_path, failing, inputs, 4, cache)
    store = StageStore(tmp_path / "out", "answers", "generate", "digest")
    assert [s.kept for s in store.manifest.shards] == [4, 4]  # batches 0 and 1, whole
    answered_early = {q for q, _, _ in failing.log if batch_of(q) > 2}
    assert answered_early, "the batches after the failing one were already being answered"

    again = SlotTeacher(slots=4)
    store, caller = run(tmp_path, again, inputs, 4, cache)
    assert [s.kept for s in store.manifest.shards] == [4] * 6
    assert not answered_early & set(again.asked), "an answer that arrived before the failure was paid again"
    assert not {q for q in again.asked if batch_of(q) < 2}  # committed batches are not asked again
    kept = list(read_shards(store.dir, [s.kept_file for s in store.manifest.shards]))
    assert [r.id for r in kept] == [r.id for r in inputs]
    cache.close()


def test_judge_batches_overlap_and_count_their_own_calls(tmp_path):
    inputs = [
        Record(
            id=f"r{i:03d}",
            messages=[Message(role="user", content=f"q{i:03d}"), Message(role="assistant", content="a")],
            candidates=[{"content": "a" + (" slow" if i % 4 == 0 else "")}, {"content": "b"}],
        )
        for i in range(16)
    ]
    teacher = SlotTeacher(slots=4, answer='{"score": 5}')
    store = StageStore(tmp_path / "out", "ranked", "rank", "digest")
    ctx = StageContext(stage="ranked", store=store, run_seed=0, notify=lambda *a: None)
    judge = Judge(TeacherCaller(teacher, None), "stage 'ranked'")
    run_rank(ctx, JudgeRanker(), judge, inputs, 4)
    shards = store.manifest.shards
    assert [s.kept for s in shards] == [4] * 4
    assert [s.meta["requests"] for s in shards] == [8] * 4  # two candidates per record
    starts = sorted(start for _, start, _ in teacher.log)
    slow_ends = sorted(end for q, _, end in teacher.log if "slow" in q)
    # the first slow judgement had not finished when the second batch's were being asked
    assert sum(s < slow_ends[0] for s in starts) > 8


def test_the_openai_teacher_keeps_its_slots_busy_across_batches_through_a_real_server(tmp_path):
    """The real client and a real HTTP server: a stub OpenAI-compatible upstream behind the fault
    proxy, which holds each batch's first request for a second."""
    from servers import FaultProxy, StubUpstream

    from distill.plugin import PluginContext
    from distill_plugins.teachers.openai import OpenAITeacher

    inputs = records(12, 4)  # q000, q004, q008 ask slowly
    with (
        StubUpstream(latency=0.02) as upstream,
        FaultProxy(upstream.base_url, delay_marker="slow", delay_seconds=1.0) as proxy,
    ):
        teacher = OpenAITeacher(model="distill-tiny", base_url=proxy.base_url, concurrency=4, max_tokens=8)
        teacher.setup(PluginContext(base_dir=tmp_path, progress=False, state_dir=tmp_path / "state"))
        try:
            cache = RequestCache(tmp_path / "cache.sqlite")
            store, caller = run(tmp_path, teacher, inputs, 4, cache)
        finally:
            teacher.close()
        answered = sorted(proxy.stats.answered_at)
    assert [s.kept for s in store.manifest.shards] == [4, 4, 4]
    assert caller.stats.requests == 12 and cache.stats().entries == 12
    # Every fast request (of all three batches) was answered while the first slow one was held;
    # a runner waiting at batch boundaries would have had only its own batch's three by then.
    assert sum(t < answered[0] + 0.9 for t in answered) >= 6, [round(t - answered[0], 2) for t in answered]
    assert proxy.stats.max_in_flight <= 4
    cache.close()
