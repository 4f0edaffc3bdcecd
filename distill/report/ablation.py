"""The report's "what the generated data added" table, from `OUT/ablation.json`.

An ablation (`benchmarks/bench_distillation.py`) trains the same student on different data
(seed answers only, generated data only, both, context distillation) over several run seeds
and writes its table beside each run it made; the report of any of those runs then shows the
arms side by side, the run's own arm marked, so a reader sees what the generated data added
over the data the user already had, measured the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.layout import ABLATION_FILE
from distill.report.markup import Html, empty, esc, num, table


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Arm(_Loose):
    arm: str
    what: str = ""
    seeds: list[int] = Field(default_factory=list)
    student_mean: float
    student_min: float
    student_max: float
    teacher_as_it_wrote_the_data_mean: float | None = None
    base_mean: float | None = None
    training_rows_mean: dict[str, float] = Field(default_factory=dict)


class Ablation(_Loose):
    what: str = ""
    arms: list[Arm] = Field(default_factory=list)
    this_run: dict[str, Any] = Field(default_factory=dict)


def load_ablation(root: Path, problems: list[str]) -> Ablation | None:
    path = root / ABLATION_FILE
    if not path.is_file():
        return None
    try:
        return Ablation.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        problems.append(f"{ABLATION_FILE} cannot be read: {str(exc).splitlines()[0]}")
        return None


def ablation_part(ab: Ablation | None) -> str:
    """A part of the evaluation section; empty when the run was not made by an ablation."""
    if ab is None:
        return ""
    if not ab.arms:
        return "<h3>What the generated data added</h3>" + empty(f"{ABLATION_FILE} lists no arm")
    mine = str(ab.this_run.get("arm", ""))
    rows = []
    for a in ab.arms:
        rows_by = ", ".join(f"{k} {v:g}" for k, v in a.training_rows_mean.items() if v)
        label = a.arm + (" (this run)" if mine and a.arm.startswith(f"({mine})") else "")
        rows.append(
            [
                label,
                a.what,
                rows_by or "–",
                Html(f"<b>{esc(num(a.student_mean))}</b> ({esc(num(a.student_min))}–{esc(num(a.student_max))})"),
                a.teacher_as_it_wrote_the_data_mean,
                a.base_mean,
                len(a.seeds),
            ]
        )
    headers = ["arm", "training data", "answers by (mean rows)", "student", "teacher as it wrote", "base", "seeds"]
    note = Html(
        f"<p>{esc(ab.what)}. Student: mean held-out score over the run seeds (lowest–highest); the "
        "teacher is measured with the system prompt and prefix it wrote the data with.</p>"
    )
    return "<h3>What the generated data added</h3>" + note + table(headers, rows)
