"""How each kind of stage turns its input into committed shards.

Every runner follows one rule: a batch is either committed whole (kept + rejected == what
entered + what was generated) or not at all, and batches are derived deterministically from
the input and the run seed, so a resumed run redoes exactly the batch that was in flight.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.cache.calls import CallStats, TeacherCaller
from distill.errors import ConfigError, PluginError
from distill.filter import Drop, Edit, Filter, Keep
from distill.io.export import export_records
from distill.io.store import StageStore
from distill.licenses import effective_tag
from distill.ranker import Judge, Ranker, candidates_of
from distill.records import Generator, Message, Record, Source, stable_id
from distill.seeding import request_seed
from distill.task import ExpandTask, MapTask, PassThrough, Reject, Task
from distill.teacher import ChatRequest

if TYPE_CHECKING:
    from distill.models.terms import Terms


@dataclass
class StageContext:
    stage: str
    store: StageStore
    run_seed: int
    notify: Callable[[str, list[Record], list[Record]], None]
    advance: Callable[[int], None] = lambda n: None
    warnings: list[str] = field(default_factory=list)
    #: The terms the core resolved for a teacher (see distill.models.terms); None: what it reports.
    terms: Callable[[Any], Terms | None] = lambda teacher: None

    def generator(self, teacher: Any, role: str = "generator") -> Generator:
        """The teacher's provenance entry, carrying the terms the core resolved for it, how they
        were found, and what the model itself says where that contradicts them."""
        g = teacher.generator(role=role)
        terms = self.terms(teacher)
        if terms is None:
            return g
        said = terms.model_says
        update = {
            "license": terms.license,
            "terms_source": terms.how,
            "model_says": f"{said.license} ({said.how})" if said is not None else None,
        }
        return g.model_copy(update=update)

    def commit(
        self,
        kept: list[Record],
        rejected: list[Record],
        *,
        inputs: int,
        generated: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        for r in kept + rejected:
            r.provenance.license = effective_tag(r)
        self.store.commit(kept, rejected, inputs=inputs, generated=generated, meta=meta)
        self.notify(self.stage, kept, rejected)


def drop_record(record: Record, stage: str, plugin: Task | Filter | Ranker | None, reason: str) -> Record:
    record.add_event(
        stage,
        "dropped",
        plugin=plugin.name if plugin else None,
        plugin_version=plugin.plugin_version if plugin else None,
        reason=reason,
    )
    return record


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


def guarded(plugin: Task | Filter | Ranker, method: str, call: Callable[[], Any], on: Record | str | None) -> Any:
    try:
        return call()
    except PluginError:
        raise
    except Exception as exc:
        on = f" on record {on.id}" if isinstance(on, Record) else (f" on {on}" if on else "")
        raise PluginError(
            f"{plugin.kind} plugin {plugin.name!r} failed in {method}{on}: {type(exc).__name__}: {exc}"
        ) from exc


def run_filters(ctx: StageContext, filters: list[Filter], inputs: Sequence[Record], batch_size: int) -> None:
    store = ctx.store
    for i, f in enumerate(filters):
        if f.needs_whole_input():
            if i:
                raise ConfigError(
                    f"stage {ctx.stage!r}: filter {f.name!r} (as configured) chooses among all of the "
                    f"stage's records, so it must be the stage's first filter (it is number {i + 1}); "
                    f"move it first, or into a stage of its own after the others"
                )
            whole = list(inputs)  # it chooses among all of them at once
            guarded(f, "prepare", lambda: f.prepare(whole), f"stage {ctx.stage!r}")
    if store.next_index:
        _restore_filters(filters, list(store.kept()), list(store.rejected()))
    batches = math.ceil(len(inputs) / batch_size)
    ctx.advance(min(len(inputs), store.next_index * batch_size))
    for b in range(store.next_index, batches):
        chunk = [r.model_copy(deep=True) for r in inputs[b * batch_size : (b + 1) * batch_size]]
        current, rejected = chunk, []
        for f in filters:
            where = f"batch {b} of stage {ctx.stage!r}" + (
                f" (records {current[0].id}..{current[-1].id})" if current else ""
            )
            decisions = guarded(f, "filter_batch", lambda: f.filter_batch(current), where)
            if len(decisions) != len(current):
                raise PluginError(
                    f"filter plugin {f.name!r} returned {len(decisions)} decisions for {len(current)} records"
                )
            survivors = []
            for r, d in zip(current, decisions):
                if isinstance(d, Keep):
                    r.add_event(ctx.stage, "kept", plugin=f.name, plugin_version=f.plugin_version)
                    survivors.append(r)
                elif isinstance(d, Drop):
                    rejected.append(drop_record(r, ctx.stage, f, d.reason))
                elif isinstance(d, Edit):
                    if d.record.id != r.id:
                        raise PluginError(f"filter plugin {f.name!r} changed a record's id ({r.id} -> {d.record.id})")
                    d.record.add_event(
                        ctx.stage, "edited", plugin=f.name, plugin_version=f.plugin_version, reason=d.reason
                    )
                    survivors.append(d.record)
                else:
                    raise PluginError(f"filter plugin {f.name!r} returned {d!r}, not Keep, Drop or Edit")
            current = survivors
        ctx.commit(current, rejected, inputs=len(chunk))
        ctx.advance(len(chunk))


def _restore_filters(filters: list[Filter], kept: list[Record], rejected: list[Record]) -> None:
    """Give each filter the records that passed it in committed shards, so its state is whole."""
    position = {f.name: i for i, f in enumerate(filters)}
    dropped_at: list[tuple[int, Record]] = []
    for r in rejected:
        ev = next((e for e in reversed(r.provenance.events) if e.action == "dropped"), None)
        dropped_at.append((position.get(ev.plugin or "", -1) if ev else -1, r))
    for i, f in enumerate(filters):
        f.restore(kept + [r for at, r in dropped_at if at > i])


def run_export(ctx: StageContext, fmt: str, inputs: Sequence[Record], path: Path) -> None:
    if ctx.store.next_index:
        return
    chunk = [r.model_copy(deep=True) for r in inputs]
    result = export_records(chunk, fmt, path)  # type: ignore[arg-type]
    for r in result.kept:
        r.add_event(ctx.stage, "kept", reason=f"exported as {fmt}")
    rejected = [drop_record(r, ctx.stage, None, reason) for r, reason in result.rejected]
    ctx.commit(result.kept, rejected, inputs=len(chunk), meta={"path": str(path), "format": fmt})
    ctx.advance(len(chunk))


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
