"""The runners of stages that ask a teacher: map and expand tasks (generate) and rankers (rank).

Same rule as every runner (see `distill.executor.local`): a batch is committed whole or not
at all, derived deterministically from the input and the run seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from distill.cache.calls import CallStats, TeacherCaller
from distill.errors import PluginError
from distill.executor.local import StageContext, drop_record, guarded
from distill.ranker import Judge, Ranker, candidates_of
from distill.records import Message, Record, Source, stable_id
from distill.seeding import request_seed
from distill.task import ExpandTask, MapTask, PassThrough, Reject, Task
from distill.teacher import ChatRequest


def _call_meta(caller: TeacherCaller, before: CallStats) -> dict[str, Any]:
    return {"requests": caller.stats.requests - before.requests, "cache_hits": caller.stats.hits - before.hits}


def run_map(ctx: StageContext, task: MapTask, caller: TeacherCaller, inputs: Sequence[Record], batch_size: int) -> None:
    generator = ctx.generator(caller.teacher)
    batches = math.ceil(len(inputs) / batch_size)
    ctx.advance(ctx.store.next_index * batch_size)
    for b in range(ctx.store.next_index, batches):
        chunk = [r.model_copy(deep=True) for r in inputs[b * batch_size : (b + 1) * batch_size]]
        before = replace(caller.stats)
        kept: list[Record] = []
        rejected: list[Record] = []
        pending: list[tuple[Record, ChatRequest]] = []
        for r in chunk:
            built = guarded(task, "build", lambda: task.build(r), r)
            if isinstance(built, Reject):
                rejected.append(drop_record(r, ctx.stage, task, built.reason))
            elif isinstance(built, PassThrough):
                r.add_event(
                    ctx.stage, "kept", plugin=task.name, plugin_version=task.plugin_version, reason=built.reason
                )
                kept.append(r)
            else:
                pending.append((r, ChatRequest(messages=built, seed=request_seed(ctx.run_seed, ctx.stage, r.id))))
        results = caller([q for _, q in pending], f"batch {b} of stage {ctx.stage!r}")
        for (r, _), samples in zip(pending, results):
            g = r.add_generator(generator)
            out = guarded(task, "apply", lambda: task.apply(r, samples, g), r)
            if isinstance(out, Reject):
                rejected.append(drop_record(r, ctx.stage, task, out.reason))
            else:
                out.add_event(ctx.stage, "generated", plugin=task.name, plugin_version=task.plugin_version)
                kept.append(out)
        ctx.commit(kept, rejected, inputs=len(chunk), meta=_call_meta(caller, before))
        ctx.advance(len(chunk))


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
            ChatRequest(messages=p.messages, seed=request_seed(ctx.run_seed, ctx.stage, rnd, j))
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


def run_rank(ctx: StageContext, ranker: Ranker, judge: Judge | None, inputs: Sequence[Record], batch_size: int) -> None:
    judge_gen = ctx.generator(judge.caller.teacher, role="judge") if judge is not None else None
    own = guarded(ranker, "generators", ranker.generators, f"stage {ctx.stage!r}")
    batches = math.ceil(len(inputs) / batch_size)
    ctx.advance(min(len(inputs), ctx.store.next_index * batch_size))
    for b in range(ctx.store.next_index, batches):
        chunk = [r.model_copy(deep=True) for r in inputs[b * batch_size : (b + 1) * batch_size]]
        before = replace(judge.caller.stats) if judge is not None else None
        kept: list[Record] = []
        rejected: list[Record] = []
        rankable = [r for r in chunk if candidates_of(r)]
        for r in chunk:
            if not candidates_of(r):
                rejected.append(drop_record(r, ctx.stage, ranker, "nothing to rank: no answer or candidates"))
        where = f"batch {b} of stage {ctx.stage!r}"
        verdicts = guarded(ranker, "score_batch", lambda: ranker.score_batch(rankable, judge), where)
        if len(verdicts) != len(rankable):
            raise PluginError(
                f"ranker plugin {ranker.name!r} returned {len(verdicts)} results for {len(rankable)} records"
            )
        for r, v in zip(rankable, verdicts):
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
        meta = _call_meta(judge.caller, before) if judge is not None and before is not None else {}
        ctx.commit(kept, rejected, inputs=len(chunk), meta=meta)
        ctx.advance(len(chunk))
