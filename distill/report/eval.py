"""The report's evaluation section: `OUT/eval/<stage>/eval.json` (which an `evaluate` stage writes), read and shown.

The file is read leniently (unknown keys ignored, missing ones defaulted) because it is
another stage's output and may grow: the report shows what it understands, and a file it
cannot read at all is named in the report rather than failing it. The error analysis takes
the file's `worst` lists; without them it ranks the students' per-item scores itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import distill.report.plots as plots
from distill.layout import EVAL_FILE
from distill.report.ablation import Ablation, ablation_part
from distill.report.markup import Html, empty, esc, no_plots_note, num, plot, pre, section, table

#: Worst cases shown per metric and contender.
WORST = 5


@dataclass
class WorstCase:
    metric: str
    contender: str
    id: str
    prompt: str
    reference: str | None
    answer: str
    score: float | None
    #: Every contender's score on this item for the same metric.
    scores: dict[str, float | None]
    tags: dict[str, Any]


@dataclass
class Evaluation:
    stage: str
    path: str
    data: str | None = None
    contenders: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    items: int = 0
    worst: list[WorstCase] = field(default_factory=list)
    problem: str | None = None


def is_number(value: Any) -> bool:
    """A real number (not a bool, not NaN): what a score or a logged loss must be to be shown."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Contender(_Loose):
    name: str
    kind: str | None = None
    model: str | None = None
    system_prompt: Any = None
    prefix: str | None = None
    best_of: int = 1
    ranker: str | None = None


class _Metric(_Loose):
    name: str
    evaluator: str | None = None
    higher_is_better: bool = True
    description: str | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)


class _Item(_Loose):
    id: str
    prompt: Any = None
    reference: Any = None
    tags: dict[str, Any] = Field(default_factory=dict)
    answers: dict[str, Any] = Field(default_factory=dict)
    scores: dict[str, dict[str, float | None]] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class _EvalFile(_Loose):
    stage: str | None = None
    data: str | None = None
    contenders: list[_Contender] = Field(default_factory=list)
    metrics: list[_Metric] = Field(default_factory=list)
    items: list[_Item] = Field(default_factory=list)
    worst: dict[str, dict[str, list[str]]] = Field(default_factory=dict)

    @field_validator("worst", mode="before")
    @classmethod
    def _ids_text(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            m: {
                c: [str(i) if isinstance(i, int) else i for i in ids] if isinstance(ids, list) else ids
                for c, ids in per.items()
            }
            if isinstance(per, dict)
            else per
            for m, per in value.items()
        }


def _eval_files(root: Path, order: dict[str, int]) -> list[Path]:
    """`OUT/eval/<stage>/eval.json`, in config order."""
    found = {p.resolve(): p for p in root.glob(f"eval/*/{EVAL_FILE}")}
    return sorted(found.values(), key=lambda p: (order.get(p.parent.name, len(order)), p.parent.name, str(p)))


def evaluations(root: Path, order: dict[str, int], problems: list[str]) -> list[Evaluation]:
    """Every evaluation result of the run, in stage order (`order`: stage name -> position)."""
    results = []
    for path in _eval_files(root, order):
        rel = path.relative_to(root).as_posix()
        ev = Evaluation(stage=path.parent.name, path=rel)
        try:
            parsed = _EvalFile.model_validate_json(path.read_bytes())
        except (OSError, ValueError) as exc:
            why = _validation_text(exc) if isinstance(exc, ValidationError) else str(exc)
            ev.problem = f"{rel} cannot be read: {why}"
            problems.append(ev.problem)
            results.append(ev)
            continue
        ev.stage = parsed.stage or ev.stage
        ev.data = parsed.data
        ev.contenders = [c.model_dump() for c in parsed.contenders]
        ev.metrics = [m.model_dump() for m in parsed.metrics]
        ev.items = len(parsed.items)
        ev.worst = _worst(parsed)
        results.append(ev)
    return results


def _validation_text(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}"


def _worst(ev: _EvalFile) -> list[WorstCase]:
    """The error analysis: the file's `worst` lists, or, without them, the students' lowest scores."""
    items = {i.id: i for i in ev.items}
    metrics = {m.name: m for m in ev.metrics}
    wanted: list[tuple[str, str, list[str]]] = [(m, c, ids) for m, per in ev.worst.items() for c, ids in per.items()]
    if not ev.worst:
        students = [c.name for c in ev.contenders if c.kind == "student"] or [c.name for c in ev.contenders]
        for m in ev.metrics:
            for c in students:
                scored = [
                    (float(i.scores[m.name][c] or 0.0), n, i.id)
                    for n, i in enumerate(ev.items)
                    if is_number(i.scores.get(m.name, {}).get(c))
                ]
                scored.sort(key=lambda t: (t[0] if m.higher_is_better else -t[0], t[1]))
                wanted.append((m.name, c, [i for _, _, i in scored]))
    cases = []
    for metric, contender, ids in wanted:
        for item_id in [i for i in ids if i in items][:WORST]:
            item = items[item_id]
            per = item.scores.get(metric, {})
            cases.append(
                WorstCase(
                    metric=metric,
                    contender=contender,
                    id=item_id,
                    prompt=as_text(item.prompt),
                    reference=None if item.reference is None else as_text(item.reference),
                    answer=as_text(item.answers.get(contender, "")),
                    score=per.get(contender),
                    scores=dict(per),
                    tags=dict(item.tags),
                )
            )
    known = list(metrics)
    cases.sort(key=lambda w: known.index(w.metric) if w.metric in known else len(known))
    return cases


def as_text(value: Any) -> str:
    """A prompt or answer as text: chat messages as `role: content` lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return "\n".join(f"{m.get('role', '?')}: {m['content']}" for m in value)
    return "" if value is None else json.dumps(value, default=str)


def evaluation_section(evals: list[Evaluation], ablation: Ablation | None) -> str:
    if not evals:
        return section("evaluation", "Evaluation", empty("no evaluation in this run"), ablation_part(ablation))
    return section("evaluation", "Evaluation", *[_one_eval(ev) for ev in evals], ablation_part(ablation))


def _one_eval(ev: Evaluation) -> str:
    head = f"<h3>{esc(ev.stage)} <small>({esc(ev.path)})</small></h3>"
    if ev.problem:
        return head + empty(ev.problem)
    kinds = {c["name"]: c.get("kind") or "model" for c in ev.contenders}
    names = [c["name"] for c in ev.contenders]
    for m in ev.metrics:  # contenders a metric scores without listing them
        names += [n for n in m["scores"] if n not in names]
    parts = [
        head,
        Html(f"<p>held-out data: {esc(ev.data or '–')}; {ev.items} items</p>"),
        table(
            ["contender", "kind", "model", "system prompt", "answers"],
            [
                (
                    c["name"],
                    c.get("kind") or "–",
                    c.get("model") or "–",
                    yes_no(c.get("system_prompt")),
                    _how_it_answers(c),
                )
                for c in ev.contenders
            ],
        ),
    ]
    charts, rows = [], []
    for m in ev.metrics:
        scores = [(n, kinds.get(n, "model"), float(m["scores"][n])) for n in names if is_number(m["scores"].get(n))]
        if scores:
            charts.append(
                plot(plots.metric_png, f"{m['name']} per contender", m["name"], scores, m["higher_is_better"])
            )
        best = (max if m["higher_is_better"] else min)((s for _, _, s in scores), default=None)
        cells = [
            Html(f'<span class="best">{esc(num(m["scores"][n]))}</span>')
            if best is not None and is_number(m["scores"].get(n)) and float(m["scores"][n]) == best
            else m["scores"].get(n)
            for n in names
        ]
        rows.append(
            [
                m["name"],
                m.get("evaluator") or "–",
                "higher" if m["higher_is_better"] else "lower",
                m.get("description") or "",
                *cells,
            ]
        )
    parts.append(Html('<div class="plots">' + "".join(charts) + "</div>"))
    parts.append(no_plots_note())
    if rows:
        parts.append(
            table(["metric", "evaluator", "better", "description", *names], rows, numeric=range(4, 4 + len(names)))
        )
    else:
        parts.append(empty("this evaluation has no metrics"))
    parts.append("<h3>Error analysis: worst cases</h3>")
    if ev.worst:
        parts.append(
            table(
                ["metric", "contender", "item", "prompt", "reference", "answer", "score", "all contenders", "tags"],
                [
                    (
                        w.metric,
                        w.contender,
                        w.id,
                        pre(w.prompt),
                        pre(w.reference) if w.reference else "–",
                        pre(w.answer),
                        w.score,
                        ", ".join(f"{k}={num(v)}" for k, v in w.scores.items()),
                        ", ".join(f"{k}={v}" for k, v in w.tags.items()) or "–",
                    )
                    for w in ev.worst
                ],
                numeric=(6,),
            )
        )
    else:
        parts.append(empty("no per-item scores to rank"))
    return "\n".join(parts)


def yes_no(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "no" if value in (None, "") else str(value)


def _how_it_answers(c: dict[str, Any]) -> str:
    """A prefill or a ranker at inference time changes what a score means: say so beside it."""
    parts = [f"begin with {c['prefix']!r}"] if c.get("prefix") else []
    if (c.get("best_of") or 1) > 1:
        parts.append(f"best of {c['best_of']} by {c.get('ranker') or 'a ranker'} (a ranker at inference time)")
    return "; ".join(parts) or "as asked"
