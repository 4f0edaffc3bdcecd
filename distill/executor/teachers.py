"""The runners of stages that ask a teacher: map and expand tasks (generate) and rankers (rank).

Same rule as every runner (see `distill.executor.local`): a batch is committed whole or not
at all, derived deterministically from the input and the run seed.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from distill.cache.calls import CallStats, Pending, TeacherCaller
from distill.errors import PluginError
from distill.executor.local import StageContext, drop_record, guarded
from distill.ranker import Judge, Ranker, candidates_of
from distill.records import Message, Record, Source, stable_id
from distill.seeding import request_seed
from distill.task import ExpandTask, MapTask, PassThrough, Reject, Task
from distill.teacher import ChatRequest


def _call_meta(caller: TeacherCaller, before: CallStats) -> dict[str, Any]:
    return {"requests": caller.stats.requests - before.requests, "cache_hits": caller.stats.hits - before.hits}


@dataclass
class MapBatch:
    """A map batch whose requests are submitted: what was decided without the teacher, what waits."""

    index: int
    chunk: list[Record]
    kept: list[Record]
    rejected: list[Record]
    asked: list[Record]
    pending: Pending


def _submit_map(
    ctx: StageContext, task: MapTask, caller: TeacherCaller, inputs: Sequence[Record], b: int, batch_size: int
) -> MapBatch:
    chunk = [r.model_copy(deep=True) for r in inputs[b * batch_size : (b + 1) * batch_size]]
    kept: list[Record] = []
    rejected: list[Record] = []
    asked: list[Record] = []
    requests: list[ChatRequest] = []
    for r in chunk:
        built = guarded(task, "build", lambda: task.build(r), r)
        if isinstance(built, Reject):
            rejected.append(drop_record(r, ctx.stage, task, built.reason))
        elif isinstance(built, PassThrough):
            r.add_event(ctx.stage, "kept", plugin=task.name, plugin_version=task.plugin_version, reason=built.reason)
            kept.append(r)
        else:
            asked.append(r)
            fmt = guarded(task, "response_format", lambda: task.response_format(r), r)
            requests.append(
                ChatRequest(messages=built, seed=request_seed(ctx.run_seed, ctx.stage, r.id), response_format=fmt)
            )
    pending = caller.submit(requests, f"batch {b} of stage {ctx.stage!r}")
    return MapBatch(b, chunk, kept, rejected, asked, pending)


def run_map(ctx: StageContext, task: MapTask, caller: TeacherCaller, inputs: Sequence[Record], batch_size: int) -> None:
    """Batches are committed in order; with a teacher that serves overlapping calls, the next
    `caller.lookahead` batches' requests are already in flight while one is applied and committed."""
    generator = ctx.generator(caller.teacher)
    batches = math.ceil(len(inputs) / batch_size)
    ctx.advance(ctx.store.next_index * batch_size)
    ahead = caller.lookahead(batch_size)
    window: deque[MapBatch] = deque()
    following = ctx.store.next_index
    try:
        for b in range(ctx.store.next_index, batches):
            while following < batches and following <= b + ahead:
                window.append(_submit_map(ctx, task, caller, inputs, following, batch_size))
                following += 1
            batch = window.popleft()
            kept, rejected = batch.kept, batch.rejected
            for r, samples in zip(batch.asked, batch.pending.result()):
                g = r.add_generator(generator)
                out = guarded(task, "apply", lambda: task.apply(r, samples, g), r)
                if isinstance(out, Reject):
                    rejected.append(drop_record(r, ctx.stage, task, out.reason))
                else:
                    out.add_event(ctx.stage, "generated", plugin=task.name, plugin_version=task.plugin_version)
                    kept.append(out)
            meta = {"requests": len(batch.pending.requests), "cache_hits": batch.pending.hits}
            ctx.commit(kept, rejected, inputs=len(batch.chunk), meta=meta)
            ctx.advance(len(batch.chunk))
    except Exception:  # what the next batches sent is paid for: let it finish into the cache
        for left in window:
            left.pending.settle()
        raise
    except BaseException:  # interrupted: stop asking
        for left in window:
            left.pending.cancel()
        raise


def run_expand(
    ctx: StageContext, task: ExpandTask, caller: TeacherCaller, inputs: Sequence[Record], batch_size: int
) -> None:
    generator = ctx.generator(caller.teacher)
    store = ctx.store
    if store.next_index == 0:
        passed = [r.model_copy(deep=True) for r in inputs]
        if task.keep_inputs:
            for r in passed:
                r.add_event(
                    ctx.stage,
                    "kept",
                    plugin=task.name,
                    plugin_version=task.plugin_version,
                    reason="input passes through",
                )
            ctx.commit(passed, [], inputs=len(passed), meta={"round": "inputs"})
        else:
            for r in passed:
                drop_record(r, ctx.stage, task, "input used as examples only (keep_inputs: false)")
            ctx.commit([], passed, inputs=len(passed), meta={"round": "inputs"})
    pool = list(inputs) + [r for r in store.kept() if r.metadata.get("generated_by") == ctx.stage]
    target = task.target()
    produced = len(pool) - len(inputs)
    ctx.advance(produced)
    max_rounds = 3 * math.ceil(target / batch_size) + 1
    rnd = store.next_index - 1
    while produced < target and rnd < max_rounds:
        rng = random.Random(request_seed(ctx.run_seed, ctx.stage, "round", rnd))
        count = min(batch_size, target - produced)
        before = replace(caller.stats)
        proposals = guarded(
            task, "propose", lambda: task.propose(pool, count, rng), f"round {rnd} of stage {ctx.stage!r}"
        )
        requests = [
            ChatRequest(
                messages=p.messages,
                seed=request_seed(ctx.run_seed, ctx.stage, rnd, j),
                continue_final=p.continue_final,
            )
            for j, p in enumerate(proposals)
        ]
        results = caller(requests, f"round {rnd} of stage {ctx.stage!r}")
        kept: list[Record] = []
        rejected: list[Record] = []
        for j, (p, samples) in enumerate(zip(proposals, results)):
            sources = _merge_sources(p.parents)
            for k, sample in enumerate(samples):
                parsed = guarded(task, "parse", lambda: task.parse(p, sample), f"round {rnd} of stage {ctx.stage!r}")
                convs = [] if isinstance(parsed, Reject) else parsed
                if isinstance(parsed, Reject):
                    raw = _new_record(
                        ctx, rnd, j, k, 0, [Message(role="assistant", content=sample.text)], sources, generator, task
                    )
                    raw.metadata["raw_output"] = True
                    rejected.append(drop_record(raw, ctx.stage, task, parsed.reason))
                for m, conv in enumerate(convs):
                    rec = _new_record(ctx, rnd, j, k, m, conv, sources, generator, task)
                    rec.metadata = {**p.metadata, **rec.metadata}  # the core's keys win
                    verdict = task.accept(pool + kept, conv)
                    if isinstance(verdict, Reject):
                        rejected.append(drop_record(rec, ctx.stage, task, verdict.reason))
                    else:
                        kept.append(rec)
        ctx.commit(
            kept,
            rejected,
            inputs=0,
            generated=len(kept) + len(rejected),
            meta={"round": rnd, **_call_meta(caller, before)},
        )
        pool.extend(kept)
        produced += len(kept)
        ctx.advance(len(kept))
        rnd += 1
    if produced < target:
        ctx.warnings.append(
            f"stage {ctx.stage!r}: produced {produced} of {target} records in {rnd} rounds; "
            "the teacher's output was often unusable (see `distill inspect` for reasons)"
        )


def _new_record(
    ctx: StageContext,
    rnd: int,
    j: int,
    k: int,
    m: int,
    conv: list[Message],
    sources: list[Source],
    generator: Any,
    task: Task,
) -> Record:
    rec = Record(
        id=stable_id(ctx.stage, ctx.run_seed, rnd, j, k, m, [c.content for c in conv]),
        messages=conv,
        metadata={"generated_by": ctx.stage},
    )
    rec.provenance.sources = [s.model_copy() for s in sources]
    rec.add_generator(generator)
    rec.add_event(ctx.stage, "generated", plugin=task.name, plugin_version=task.plugin_version)
    return rec


def _merge_sources(parents: list[Record]) -> list[Source]:
    seen: dict[tuple[str, int | None], Source] = {}
    for p in parents:
        for s in p.provenance.sources:
            seen.setdefault((s.dataset, s.row), s)
    return list(seen.values())


@dataclass
class RankBatch:
    chunk: list[Record]
    rejected: list[Record]
    rankable: list[Record]
    verdicts: list[list[float] | Reject]
    judge: Judge | None


def _score(
    ctx: StageContext, ranker: Ranker, judge: Judge | None, inputs: Sequence[Record], b: int, batch_size: int
) -> RankBatch:
    chunk = [r.model_copy(deep=True) for r in inputs[b * batch_size : (b + 1) * batch_size]]
    rejected: list[Record] = []
    rankable = [r for r in chunk if candidates_of(r)]
    for r in chunk:
        if not candidates_of(r):
            rejected.append(drop_record(r, ctx.stage, ranker, "nothing to rank: no answer or candidates"))
    own = judge.for_batch() if judge is not None else None  # counts this batch's calls
    where = f"batch {b} of stage {ctx.stage!r}"
    verdicts = guarded(ranker, "score_batch", lambda: ranker.score_batch(rankable, own), where)
    if len(verdicts) != len(rankable):
        raise PluginError(f"ranker plugin {ranker.name!r} returned {len(verdicts)} results for {len(rankable)} records")
    return RankBatch(chunk, rejected, rankable, verdicts, own)


def _scored(
    ctx: StageContext, ranker: Ranker, judge: Judge | None, inputs: Sequence[Record], batch_size: int
) -> Iterator[RankBatch]:
    """Each batch's scores, in order. A ranker that may score batches concurrently, with a judge
    that serves overlapping calls, scores the next `lookahead` batches on threads meanwhile."""
    batches = math.ceil(len(inputs) / batch_size)
    start = ctx.store.next_index
    ahead = judge.caller.lookahead(batch_size) if judge is not None and ranker.concurrent_batches else 0
    if not ahead:
        for b in range(start, batches):
            yield _score(ctx, ranker, judge, inputs, b, batch_size)
        return
    pool = ThreadPoolExecutor(max_workers=ahead + 1, thread_name_prefix="distill-rank")
    window: deque[Future[RankBatch]] = deque()
    following = start
    try:
        for b in range(start, batches):
            while following < batches and following <= b + ahead:
                window.append(pool.submit(_score, ctx, ranker, judge, inputs, following, batch_size))
                following += 1
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_rank(ctx: StageContext, ranker: Ranker, judge: Judge | None, inputs: Sequence[Record], batch_size: int) -> None:
    judge_gen = ctx.generator(judge.caller.teacher, role="judge") if judge is not None else None
    own = guarded(ranker, "generators", ranker.generators, f"stage {ctx.stage!r}")
    ctx.advance(min(len(inputs), ctx.store.next_index * batch_size))
    for batch in _scored(ctx, ranker, judge, inputs, batch_size):
        kept: list[Record] = []
        rejected = batch.rejected
        for r, v in zip(batch.rankable, batch.verdicts):
            if isinstance(v, Reject):
                rejected.append(drop_record(r, ctx.stage, ranker, v.reason))
                continue
            cands = candidates_of(r)
            if len(v) != len(cands):
                raise PluginError(
                    f"ranker plugin {ranker.name!r} gave {len(v)} scores for {len(cands)} candidates of record {r.id}"
                )
            r.candidates = [c.model_copy(update={"score": float(s)}) for c, s in zip(cands, v)]
            best = max(r.candidates, key=lambda c: c.score)  # type: ignore[arg-type,return-value]
            if r.messages and r.messages[-1].role == "assistant":
                r.messages[-1] = r.messages[-1].model_copy(update={"content": best.content})
            if judge_gen is not None:
                r.add_generator(judge_gen)
            for g in own:
                r.add_generator(g)
            pref = r.preference()
            detail = f"best {best.score:g} of {len(r.candidates)}" + (f", margin {pref.margin:g}" if pref else "")
            r.add_event(ctx.stage, "ranked", plugin=ranker.name, plugin_version=ranker.plugin_version, reason=detail)
            kept.append(r)
        j = batch.judge
        meta = {"requests": j.requests, "cache_hits": j.hits} if j is not None else {}
        ctx.commit(kept, rejected, inputs=len(batch.chunk), meta=meta)
        ctx.advance(len(batch.chunk))
