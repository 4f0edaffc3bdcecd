"""What people decided, applied to records: the work of a `review` stage, record by record.

A human choice becomes candidate scores (the chosen, or the ranking, above everything the
model scored), so every later stage reads it the way it reads a ranker's: the preference
export pairs the human's best with the worst, the SFT export takes the best as the answer.
The model's own scores are kept in `metadata.review.model_scores`. Each reviewer enters
provenance as a `human` model under the license the stage declares, so the audit weighs
their work like any other contribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from distill.records import Candidate, Generator, Record
from distill.review.decisions import RecordReview

HUMAN_PLUGIN = "human"


@dataclass
class Outcome:
    record: Record
    kept: bool
    decided: bool


def human(reviewer: str, role: Literal["generator", "judge", "editor"], license: str) -> Generator:
    return Generator(role=role, plugin=HUMAN_PLUGIN, model=f"human:{reviewer}", license=license)


def apply_review(
    record: Record,
    by: dict[str, RecordReview],
    *,
    stage: str,
    conflicts: Literal["drop", "latest"],
    license: str,
) -> Outcome:
    """The record after its reviewers' decisions; `kept` False when they rejected it or disagreed."""
    decided = {who: state for who, state in by.items() if state.decided}
    if not decided:
        return Outcome(record, True, False)
    if conflicts == "latest":
        last = max(decided, key=lambda who: decided[who].last or datetime.min.replace(tzinfo=UTC))
        decided = {last: decided[last]}
    else:
        clash = _disagreement(decided)
        if clash:
            record.add_event(stage, "dropped", plugin=HUMAN_PLUGIN, reason=f"reviewers disagree: {clash}")
            return Outcome(record, False, True)
    for who, state in sorted(decided.items()):
        if state.verdict is not None or state.ranking is not None:
            record.add_generator(human(who, "judge", license))
    rejecting = sorted((who, s) for who, s in decided.items() if s.verdict == "reject")
    if rejecting:
        who, state = rejecting[0]
        record.add_event(stage, "dropped", plugin=HUMAN_PLUGIN, reason=f"rejected by {who}: {state.reason}")
        return Outcome(record, False, True)
    for who, state in sorted(decided.items()):
        _edit(record, who, state, stage, license)
    rankings = [s.ranking for s in decided.values() if s.ranking]
    if rankings:
        _rescore(record, rankings[0])
    who_all = ", ".join(sorted(decided))
    verdicts = sorted({s.verdict for s in decided.values() if s.verdict})
    record.add_event(stage, "kept", plugin=HUMAN_PLUGIN, reason=f"{'/'.join(verdicts) or 'reviewed'} by {who_all}")
    return Outcome(record, True, True)


def _disagreement(states: dict[str, RecordReview]) -> str | None:
    verdicts = {who: s.verdict for who, s in states.items() if s.verdict}
    if len(set(verdicts.values())) > 1:
        return ", ".join(
            f"{who} {v}" + (f" ({states[who].reason})" if states[who].reason else "")
            for who, v in sorted(verdicts.items())
        )
    best = {who: s.ranking[0] for who, s in states.items() if s.ranking}
    if len(set(best.values())) > 1:
        return ", ".join(f"{who} chose #{k + 1}" for who, k in sorted(best.items()))
    return None


def _edit(record: Record, who: str, state: RecordReview, stage: str, license: str) -> None:
    if not state.edits:
        return
    editor = record.add_generator(human(who, "editor", license))
    for target, text in sorted(state.edits.items()):
        if target == "answer":
            if record.messages and record.messages[-1].role == "assistant":
                record.messages[-1] = record.messages[-1].model_copy(update={"content": text})
            where = "the answer"
        else:
            k = int(target)
            if k >= len(record.candidates):
                continue
            record.candidates[k] = record.candidates[k].model_copy(update={"content": text, "generator": editor})
            where = f"candidate {k + 1}"
        record.add_event(stage, "edited", plugin=HUMAN_PLUGIN, reason=f"{where} edited by {who}")


def _rescore(record: Record, ranking: list[int]) -> None:
    """Human-ranked candidates above the rest, best first; the rest keep the model's order."""
    n = len(record.candidates)
    ranked = [k for k in ranking if k < n]
    rest = sorted(
        (k for k in range(n) if k not in ranked),
        key=lambda k: (record.candidates[k].score is None, -(record.candidates[k].score or 0.0)),
    )
    order = ranked + rest
    record.metadata.setdefault("review", {})["model_scores"] = [c.score for c in record.candidates]
    record.metadata["review"]["ranking"] = ranked
    scores = {k: float(n - place) for place, k in enumerate(order)}
    record.candidates = [c.model_copy(update={"score": scores[k]}) for k, c in enumerate(record.candidates)]
    best: Candidate = record.candidates[ranked[0]] if ranked else record.candidates[order[0]]
    if record.messages and record.messages[-1].role == "assistant":
        record.messages[-1] = record.messages[-1].model_copy(update={"content": best.content})
