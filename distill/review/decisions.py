"""People's decisions on a stage's records: what they are, how they are kept, what they add up to.

A decision is one line of `OUT/review/<stage>/decisions.jsonl`, appended with one `write` on a
file opened for appending and fsync'd before the page is told it is saved: a killed server
loses nothing it confirmed, and two servers on one stage (two reviewers) cannot interleave
half-lines. A line torn by a power cut is skipped on read. Every decision carries an id made by
the page, so a write retried after a lost reply is recorded once.

A reviewer's decisions on a record are read in order and folded into one state (the last word
on each question counts), so changing one's mind is a new line, never an edit of an old one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distill.layout import DECISIONS_FILE, REVIEW_DIR

Action = Literal["accept", "reject", "choose", "rank", "edit", "flag", "unflag", "clear"]
ACTIONS: tuple[str, ...] = ("accept", "reject", "choose", "rank", "edit", "flag", "unflag", "clear")


class Decision(BaseModel):
    """One thing a reviewer did to one record."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Made by the page.")
    record: str = Field(min_length=1, max_length=128)
    reviewer: str = Field(min_length=1, max_length=64)
    action: Action
    #: `choose`: the best candidate; `edit`: the candidate edited (None: the final answer).
    candidate: int | None = Field(None, ge=0)
    #: `rank`: candidate indexes, best first.
    ranking: list[int] | None = None
    #: `reject` and `flag`: why.
    reason: str | None = Field(None, max_length=2000)
    #: `edit`: the new text.
    text: str | None = Field(None, max_length=100_000)
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="after")
    def _complete(self) -> Decision:
        if self.action == "choose" and self.candidate is None:
            raise ValueError("`choose` needs `candidate`")
        if self.action == "rank" and (not self.ranking or len(set(self.ranking)) != len(self.ranking)):
            raise ValueError("`rank` needs `ranking`: distinct candidate indexes, best first")
        if self.action == "reject" and not (self.reason or "").strip():
            raise ValueError("`reject` needs a reason")
        if self.action == "edit" and self.text is None:
            raise ValueError("`edit` needs `text`")
        return self


class RecordReview(BaseModel):
    """Where one reviewer stands on one record, after all their decisions on it."""

    verdict: Literal["accept", "reject"] | None = None
    reason: str | None = None
    ranking: list[int] | None = None  # best first; a `choose` is a ranking of one
    edits: dict[str, str] = Field(default_factory=dict)  # candidate index or "answer" -> new text
    flagged: bool = False
    flag_reason: str | None = None
    decisions: int = 0
    last: datetime | None = None  # when this reviewer last decided anything on the record

    @property
    def decided(self) -> bool:
        return self.verdict is not None or self.ranking is not None or bool(self.edits)


def fold(decisions: Iterable[Decision]) -> RecordReview:
    state = RecordReview()
    for d in decisions:
        state.decisions += 1
        state.last = d.time
        if d.action in ("accept", "reject"):
            state.verdict, state.reason = d.action, d.reason if d.action == "reject" else None
        elif d.action == "choose":
            state.ranking = [d.candidate]  # type: ignore[list-item]
        elif d.action == "rank":
            state.ranking = list(d.ranking or [])
        elif d.action == "edit":
            state.edits["answer" if d.candidate is None else str(d.candidate)] = d.text or ""
        elif d.action in ("flag", "unflag"):
            state.flagged, state.flag_reason = d.action == "flag", d.reason if d.action == "flag" else None
        elif d.action == "clear":
            state = RecordReview(decisions=state.decisions, last=state.last)
    return state


def decisions_path(output: Path, stage: str) -> Path:
    return Path(output) / REVIEW_DIR / stage / DECISIONS_FILE


class DecisionLog:
    """The append-only decisions file of one stage, and the decisions in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.decisions: list[Decision] = []
        self._ids: set[str] = set()
        self.torn = 0  # lines that could not be read (a write cut short)
        self.reload()

    def reload(self) -> None:
        """Read the file again, with what other processes (another reviewer's server) appended."""
        with self._lock:
            self.decisions, self._ids, self.torn = [], set(), 0
            if not self.path.is_file():
                return
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    decision = Decision.model_validate_json(line)
                except ValidationError:
                    self.torn += 1
                    continue
                if decision.id not in self._ids:
                    self._ids.add(decision.id)
                    self.decisions.append(decision)

    def append(self, decision: Decision) -> bool:
        """Commit `decision` durably; False when a decision with its id is already there."""
        line = (decision.model_dump_json() + "\n").encode("utf-8")
        with self._lock:
            if decision.id in self._ids:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size and not _ends_with_newline(fd):
                    os.write(fd, b"\n")  # a torn last line stays one bad line, not two
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._ids.add(decision.id)
            self.decisions.append(decision)
            return True

    def by_record(self, reviewers: list[str] | None = None) -> dict[str, dict[str, RecordReview]]:
        """record id -> reviewer -> their state on it (only `reviewers`' when given)."""
        grouped: dict[str, dict[str, list[Decision]]] = {}
        with self._lock:
            for d in self.decisions:
                if reviewers is None or d.reviewer in reviewers:
                    grouped.setdefault(d.record, {}).setdefault(d.reviewer, []).append(d)
        return {rid: {who: fold(ds) for who, ds in by.items()} for rid, by in grouped.items()}

    def reviewers(self) -> list[str]:
        with self._lock:
            return sorted({d.reviewer for d in self.decisions})


def _ends_with_newline(fd: int) -> bool:
    os.lseek(fd, -1, os.SEEK_END)
    return os.read(fd, 1) == b"\n"


def agreement(states: dict[str, dict[str, RecordReview]]) -> dict[str, object]:
    """How often reviewers who judged the same record agreed: on accept/reject, and on the best
    candidate. Cohen's kappa for the verdict when exactly two people reviewed."""
    verdict_pairs: list[tuple[str, str]] = []
    best_same = best_total = 0
    for by in states.values():
        people = sorted(by)
        for i, a in enumerate(people):
            for b in people[i + 1 :]:
                va, vb = by[a].verdict, by[b].verdict
                if va and vb:
                    verdict_pairs.append((va, vb))
                ra, rb = by[a].ranking, by[b].ranking
                if ra and rb:
                    best_total += 1
                    best_same += ra[0] == rb[0]
    agree = sum(a == b for a, b in verdict_pairs)
    out: dict[str, object] = {
        "reviewers": sorted({who for by in states.values() for who in by}),
        "records_with_two_or_more": sum(len(by) >= 2 for by in states.values()),
        "verdict_pairs": len(verdict_pairs),
        "verdict_agreement": round(agree / len(verdict_pairs), 3) if verdict_pairs else None,
        "best_candidate_pairs": best_total,
        "best_candidate_agreement": round(best_same / best_total, 3) if best_total else None,
        "verdict_kappa": _kappa(verdict_pairs),
    }
    return out


def _kappa(pairs: list[tuple[str, str]]) -> float | None:
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    labels = {x for pair in pairs for x in pair}
    expected = sum((sum(a == k for a, _ in pairs) / n) * (sum(b == k for _, b in pairs) / n) for k in labels)
    if expected >= 1:
        return 1.0 if observed == 1 else None
    return round((observed - expected) / (1 - expected), 3)


def parse_decision(raw: bytes | str) -> Decision:
    """A decision from a request body; a ValueError that says what is wrong otherwise."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("a decision is a JSON object")
    data.pop("time", None)  # the server's clock, not the page's
    try:
        return Decision.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "decision"
        raise ValueError(f"{where}: {first['msg']}") from None
