"""The `evaluate` stage: every contender answers the held-out set, every evaluator scores them.

Answers go through the request cache like any teacher call, so a re-run (or a resumed run)
pays for none of them again. The stage is done when `OUT/eval/<stage>/eval.json` exists with the
stage's current digest: its config, the held-out file, the teachers it uses and each
student's lineage marker (a retrained student changes it). Records pass through unchanged.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.cache.calls import Pending, TeacherCaller
from distill.config.loader import digest_view
from distill.config.stages import EvaluateStage
from distill.errors import ConfigError, DistillError, PluginError
from distill.evaluator import Contender, EvalContext, EvalItem, EvalScores, worst_items
from distill.io.seeds import load_seeds
from distill.io.store import StageStore, atomic_write
from distill.layout import EVAL_DIR, EVAL_FILE, MODEL_MARKER
from distill.models.folders import library_bars_off, local_model_folder, resolve_model_path
from distill.plugin import PluginContext
from distill.ranker import Judge
from distill.records import Candidate, Message, Record
from distill.seeding import derive_seed
from distill.stages.context import RunContext
from distill.task import Reject
from distill.teacher import ChatRequest, Sample, prefilled
from distill.training.adapters import merged_folder

if TYPE_CHECKING:
    from distill.cache.calls import TeacherCaller


@dataclass
class EvalResult:
    stage: str
    path: Path
    #: metric name -> contender -> score
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    skipped: bool = False
    seconds: float = 0.0


def run_evaluate_stage(run: RunContext, i: int, stage: EvaluateStage, upstream: StageStore) -> StageStore:
    """Score the contenders on held-out data; the records pass on unchanged."""
    result = evaluate(run, i, stage, run.result.students)
    run.result.evaluations.append(result)
    run.live.finish("cached" if result.skipped else "done", metrics=result.metrics)
    return upstream


def evaluate(run: RunContext, i: int, stage: EvaluateStage, students: list[Any]) -> EvalResult:
    started = time.monotonic()
    folder = run.output / EVAL_DIR / str(stage.name)
    path = folder / EVAL_FILE
    load = load_seeds(stage.held_out, run.loaded.base_dir)
    for w in load.warnings:
        if "no declared license" not in w:  # held-out data is never released, so its terms do not matter here
            run.log(f"warning: stage {stage.name!r}: {w}")
    if not load.records:
        raise ConfigError(f"stages[{i}].data: no usable held-out item in {stage.held_out.path}")
    items = [_item(r) for r in load.records]
    models = {c.name: _model_of(run, c, students) for c in stage.contenders}
    digest = _digest(run, i, stage, load.records, models)
    if path.is_file():
        try:
            done = json.loads(path.read_text())
        except ValueError:
            done = {}
        if done.get("digest") == digest:
            return _result(stage.name, path, done, skipped=True, seconds=time.monotonic() - started)
    contenders = [_answer(run, i, stage, c, j, models[c.name], items) for j, c in enumerate(stage.contenders)]
    ctx = EvalContext(base_dir=run.loaded.base_dir, teacher=lambda key: _caller(run, key), progress=run.progress)
    metrics: list[dict[str, Any]] = []
    per_metric: dict[str, EvalScores] = {}
    for j, ref in enumerate(stage.evaluators):
        where = f"stages[{i}].evaluators[{j}]"
        run.live.phase(f"evaluator {ref.plugin!r}", reset=True)
        evaluator = run.make_plugin("evaluator", ref.plugin, where)
        run.log(f"stage {stage.name!r}: evaluator {ref.plugin!r}")
        try:
            scores = evaluator.evaluate(items, contenders, ctx)
        except DistillError:
            raise
        except Exception as exc:
            raise PluginError(f"evaluator plugin {ref.plugin!r} ({where}) failed: {type(exc).__name__}: {exc}") from exc
        finally:
            evaluator.close()
        name = ref.plugin if ref.plugin not in per_metric else f"{ref.plugin}-{j}"
        per_metric[name] = scores
        metrics.append(
            {
                "evaluator": ref.plugin,
                "name": name,
                "higher_is_better": evaluator.higher_is_better,
                "description": evaluator.description,
                "scores": scores.scores,
                "details": scores.details,
            }
        )
    higher = {m["name"]: m["higher_is_better"] for m in metrics}
    doc = {
        "stage": stage.name,
        "digest": digest,
        "data": str(stage.held_out.path),
        "rejected": [{"where": r.provenance.events[-1].reason} for r in load.rejected],
        "contenders": [
            {
                "name": c.name,
                "kind": c.kind,
                "model": c.model,
                "system_prompt": c.system_prompt is not None,
                "prefix": c.prefix,
                "best_of": c.best_of,
                "ranker": c.ranker,
            }
            for c in contenders
        ],
        "metrics": metrics,
        "items": [
            {
                "id": it.id,
                "prompt": it.prompt,
                "reference": it.reference,
                "tags": it.tags,
                "answers": {c.name: c.answers[k] for c in contenders},
                "scores": {
                    m: {c: s.per_item[c][k] for c in s.per_item if len(s.per_item[c]) > k}
                    for m, s in per_metric.items()
                },
            }
            for k, it in enumerate(items)
        ],
        "worst": {
            m: {c: worst_items(items, s.per_item[c], higher[m], stage.worst) for c in s.per_item}
            for m, s in per_metric.items()
        },
    }

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, indent=1, default=str).encode())
    return _result(stage.name, path, doc, skipped=False, seconds=time.monotonic() - started)


def _result(stage: str, path: Path, doc: dict[str, Any], *, skipped: bool, seconds: float) -> EvalResult:
    return EvalResult(
        stage=stage,
        path=path,
        skipped=skipped,
        seconds=seconds,
        metrics={m["name"]: m["scores"] for m in doc.get("metrics", [])},
        higher_is_better={m["name"]: m["higher_is_better"] for m in doc.get("metrics", [])},
    )


def _item(record: Any) -> EvalItem:
    msgs = list(record.messages)
    reference = None
    if msgs and msgs[-1].role == "assistant":
        reference = msgs.pop().content
    return EvalItem(id=record.id, messages=msgs, reference=reference, tags=dict(record.metadata.get("fields", {})))


def _model_of(run: RunContext, c: Any, students: list[Any]) -> str | None:
    """The local folder a `model` or `student` contender answers from (None: a teacher)."""

    if c.model is not None:
        return resolve_model_path(c.model, run.loaded.base_dir)
    if c.student is None:
        return None
    name, _, step = c.student.partition(".")
    result = next((s for s in students if s.stage == name), None)
    if result is None:  # checked at load; this is a run with --until before the train stage
        raise ConfigError(f"contender {c.name!r}: train stage {name!r} has not run")
    if not step:
        return str(result.path)
    return str(dict(result.steps)[step].model_path)


def _digest(run: RunContext, i: int, stage: EvaluateStage, records: list[Any], models: dict[str, str | None]) -> str:
    h = hashlib.sha256()
    config = digest_view(run.loaded.raw)
    raw = config["stages"][i]
    teachers = {c.teacher: config.get("teachers", {}).get(c.teacher) for c in stage.contenders if c.teacher}
    judges = {
        k: v
        for e in raw.get("evaluators", [])
        if isinstance(e, dict)
        for k, v in config.get("teachers", {}).items()
        if k == (e.get("options") or {}).get("judge")
    }
    h.update(
        json.dumps(
            [raw, teachers, judges, run.config.seed, [r.id for r in records]], sort_keys=True, default=str
        ).encode()
    )
    for name, folder in sorted(models.items(), key=lambda kv: kv[0]):
        marker = Path(folder) / MODEL_MARKER if folder and folder != "embedded" else None
        h.update(name.encode() + (marker.read_bytes() if marker is not None and marker.is_file() else b"-"))
    return h.hexdigest()[:16]


def _caller(run: RunContext, key: str) -> TeacherCaller:
    if key not in run.config.teachers:
        known = ", ".join(sorted(run.config.teachers)) or "none defined"
        raise ConfigError(f"evaluator: no teacher named {key!r} (teachers: {known})")
    return TeacherCaller(run.teacher(key), run.request_cache())


def _answer(
    run: RunContext, i: int, stage: EvaluateStage, c: Any, j: int, folder: str | None, items: list[EvalItem]
) -> Contender:
    run.live.phase(f"contender {c.name!r}", reset=True)
    if c.teacher is not None:
        teacher = run.teacher(c.teacher)
        owned = False
    else:
        assert folder is not None
        if (
            folder != "embedded"
            and (Path(folder) / "adapter_config.json").is_file()
            and not (Path(folder) / "config.json").is_file()
        ):
            folder = str(_merged(stage, c.name, Path(folder)))  # engines load full weights
        teacher = _engine(run, i, stage, c, folder)
        owned = True
    try:
        caller = TeacherCaller(teacher, run.request_cache())
        prefill = [Message(role="assistant", content=c.prefix)] if c.prefix else []
        requests = [
            ChatRequest(
                messages=_asked(c, it) + prefill,
                n=c.best_of,
                seed=derive_seed(run.config.seed, stage.name, "answer", it.id),
            )
            for it in items
        ]
        best_of = f", best of {c.best_of}" if c.best_of > 1 else ""
        run.log(f"stage {stage.name!r}: {c.name} answers {len(items)} held-out questions{best_of}")
        samples = _ask(run, caller, requests, f"stage {stage.name!r}, contender {c.name!r}")
        model = teacher.model_info().model
    finally:
        if owned:
            teacher.close()
    answers = [[prefilled(c.prefix, x.text) for x in s] for s in samples]
    chosen = _best_of(run, i, stage, c, j, items, answers) if c.best_of > 1 else [a[0] if a else "" for a in answers]
    return Contender(
        name=c.name,
        kind=c.kind,
        model=model,
        answers=chosen,
        model_path=_weights(run, folder, teacher),
        system_prompt=c.system_prompt,
        prefix=c.prefix,
        best_of=c.best_of,
        ranker=c.ranker.plugin if c.ranker else None,
    )


def _ask(run: RunContext, caller: TeacherCaller, requests: list[ChatRequest], where: str) -> list[list[Sample]]:
    """The requests in chunks, so the run's progress line can count answers; with a teacher that
    serves overlapping calls the next chunks are in flight while one is read, as in a generate stage."""
    size = max(16, caller.in_flight)
    chunks = [requests[k : k + size] for k in range(0, len(requests), size)]
    ahead = caller.lookahead(size)
    run.live.count(len(requests), "answers")
    window: deque[Pending] = deque()
    following = 0
    samples: list[list[Sample]] = []
    try:
        for k, chunk in enumerate(chunks):
            while following < len(chunks) and following <= k + ahead:
                window.append(caller.submit(chunks[following], where))
                following += 1
            samples += window.popleft().result()
            run.live.advance(len(chunk))
    except Exception:  # what was sent is paid for: let it finish into the cache
        for left in window:
            left.settle()
        raise
    except BaseException:
        for left in window:
            left.cancel()
        raise
    return samples


def _asked(c: Any, it: EvalItem) -> list[Message]:
    """The question as this contender is asked it: its system prompt, if any, then the item."""
    return ([Message(role="system", content=c.system_prompt)] if c.system_prompt else []) + it.messages


def _best_of(
    run: RunContext, i: int, stage: EvaluateStage, c: Any, j: int, items: list[EvalItem], answers: list[list[str]]
) -> list[str]:
    """Each item's answer the contender's ranker scores highest (the first of equals).

    The ranker sees what it would see in use: the question as asked (system prompt included) and
    the answers, never the held-out reference or tags."""
    where = f"stages[{i}].contenders[{j}].ranker"
    ranker = run.make_plugin("ranker", c.ranker.plugin, where)
    try:
        judge = None
        if ranker.needs_judge:
            if c.judge is None:
                raise ConfigError(f"{where}: the {c.ranker.plugin!r} ranker needs a judge; set `judge:` to a teacher")
            judge = Judge(TeacherCaller(run.teacher(c.judge), run.request_cache()), f"stage {stage.name!r}, {c.name}")
        records = [
            Record(id=it.id, messages=_asked(c, it), candidates=[Candidate(content=a) for a in texts])
            for it, texts in zip(items, answers)
        ]
        try:
            scores = ranker.score_batch(records, judge)
        except DistillError:
            raise
        except Exception as exc:
            raise PluginError(
                f"ranker plugin {c.ranker.plugin!r} ({where}) failed: {type(exc).__name__}: {exc}"
            ) from exc
    finally:
        ranker.close()
    chosen = []
    for texts, s in zip(answers, scores):
        if isinstance(s, Reject) or not texts:
            chosen.append(texts[0] if texts else "")
        else:
            chosen.append(texts[max(range(len(texts)), key=lambda k: (s[k], -k))])
    return chosen


def _engine(run: RunContext, i: int, stage: EvaluateStage, c: Any, folder: str | None) -> Any:
    """The answering engine for a local model: `engine`'s plugin with `model` set to the folder."""
    from pydantic import ValidationError

    where = f"stages[{i}].engine"
    spec = run.registry.get("teacher", stage.engine.plugin)
    try:
        options = spec.cls.Options.model_validate({**stage.engine.options, "model": folder})
    except ValidationError as exc:
        raise ConfigError(f"{where}.options: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    engine = spec.cls(options)
    try:
        engine.setup(
            PluginContext(
                base_dir=run.loaded.base_dir,
                progress=run.progress,
                state_dir=run.output / "state" / f"{stage.name}.{c.name}",
                log=run.log,
            )
        )
    except DistillError:
        raise
    except Exception as exc:
        raise PluginError(
            f"teacher plugin {stage.engine.plugin!r} ({where}) could not load contender "
            f"{c.name!r} from {folder}: {type(exc).__name__}: {exc}"
        ) from exc
    return engine


def _merged(stage: EvaluateStage, name: str, adapter: Path) -> Path:
    """The adapter merged into its base, in the trainers' own place for it (`adapter/merged`)."""

    with library_bars_off():
        return merged_folder(adapter, f"evaluate stage {stage.name!r}, contender {name!r}")


def _weights(run: RunContext, folder: str | None, teacher: Any) -> Path | None:
    """Local weights for perplexity: the folder, the embedded model's converted folder, or a
    local teacher's model folder."""

    if folder is None:
        model = getattr(teacher.options, "model", None)
        if not isinstance(model, str) or teacher.name not in ("transformers", "vllm"):
            return None
        folder = resolve_model_path(model, run.loaded.base_dir)
    try:
        return local_model_folder(folder, "evaluate", progress=False)
    except DistillError:
        return None
