"""A stage's records as the review page shows them: one record at a time, and a list to move in.

Everything the page shows comes from here as JSON, and the page puts it on screen as text
(never as markup), so no record can inject anything into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.errors import StoreError
from distill.io.store import StageManifest, read_shards
from distill.layout import MANIFEST, STAGES_DIR
from distill.records import Record
from distill.review.decisions import DecisionLog, RecordReview, agreement

#: Stage kinds whose records a person can review (the others write no records).
RECORD_KINDS = ("seeds", "generate", "rank", "filter", "review")


def stage_manifest(output: Path, stage: str) -> StageManifest:
    path = Path(output) / STAGES_DIR / stage / MANIFEST
    if not path.is_file():
        known = ", ".join(reviewable_stages(output)) or "none yet"
        raise StoreError(f"no stage {stage!r} in {output} (stages with records: {known})")
    return StageManifest.model_validate_json(path.read_bytes())


def reviewable_stages(output: Path) -> list[str]:
    """Stages with records, in the order they were started."""
    return [m.stage for m in _record_stages(output)]


def default_stage(output: Path) -> str:
    """The last rank stage (its candidates are what people compare), else the last stage."""
    stages = _record_stages(output)
    if not stages:
        raise StoreError(f"{output} has no stage with records to review; run the pipeline first")
    ranked = [m for m in stages if m.kind == "rank"]
    return (ranked or stages)[-1].stage


def _record_stages(output: Path) -> list[StageManifest]:
    found = []
    for path in (Path(output) / STAGES_DIR).glob(f"*/{MANIFEST}"):
        m = StageManifest.model_validate_json(path.read_bytes())
        if m.kind in RECORD_KINDS and m.shards:
            found.append(m)
    return sorted(found, key=lambda m: m.started_at)


class StageRecords:
    """A stage's kept records, then its rejected ones (which a reviewer may bring back)."""

    def __init__(self, output: Path, stage: str) -> None:
        self.stage = stage
        manifest = stage_manifest(output, stage)
        folder = Path(output) / STAGES_DIR / stage
        kept = list(read_shards(folder, [s.kept_file for s in manifest.shards]))
        rejected = list(read_shards(folder, [s.rejected_file for s in manifest.shards]))
        self.records: list[Record] = kept + rejected
        self.dropped: dict[str, str] = {r.id: _drop_reason(r) for r in rejected}
        self.index = {r.id: i for i, r in enumerate(self.records)}

    def summary(self, log: DecisionLog, reviewer: str) -> dict[str, Any]:
        """The list the page moves through, with what it filters on."""
        states = log.by_record()
        rows = []
        for r in self.records:
            by = states.get(r.id, {})
            mine = by.get(reviewer, RecordReview())
            rows.append(
                {
                    "id": r.id,
                    "dropped": r.id in self.dropped,
                    "margin": margin(r),
                    "candidates": len(r.candidates),
                    "mine": mine.verdict or ("decided" if mine.decided else None),
                    "flagged": any(s.flagged for s in by.values()),
                    "rejected_by_someone": any(s.verdict == "reject" for s in by.values()),
                    "reviewers": sorted(who for who, s in by.items() if s.decided),
                }
            )
        done = sum(1 for row in rows if row["mine"])
        return {
            "stage": self.stage,
            "reviewer": reviewer,
            "total": len(rows),
            "reviewed": done,
            "records": rows,
            "agreement": agreement(states),
        }

    def detail(self, record_id: str, log: DecisionLog, reviewer: str) -> dict[str, Any] | None:
        i = self.index.get(record_id)
        if i is None:
            return None
        r = self.records[i]
        prov = r.provenance
        writers = prov.generators
        states = log.by_record().get(r.id, {})
        return {
            "id": r.id,
            "position": i,
            "dropped": self.dropped.get(r.id),
            "prompt": [m.model_dump() for m in r.prompt()],
            "answer": r.response(),
            "candidates": [
                {
                    "index": k,
                    "content": c.content,
                    "score": c.score,
                    "finish_reason": c.finish_reason,
                    "writer": _writer(writers[c.generator])
                    if c.generator is not None and c.generator < len(writers)
                    else None,
                }
                for k, c in enumerate(r.candidates)
            ],
            "margin": margin(r),
            "sources": [s.model_dump() for s in prov.sources],
            "generators": [_writer(g) for g in writers],
            "license": {
                "expression": prov.license.expression,
                "use": prov.license.use,
                "restrictions": prov.license.restrictions,
            },
            "events": [
                {"stage": e.stage, "action": e.action, "plugin": e.plugin, "reason": e.reason} for e in prov.events
            ],
            "mine": states.get(reviewer, RecordReview()).model_dump(mode="json"),
            "others": {
                who: s.model_dump(include={"verdict", "reason", "ranking", "flagged"})
                for who, s in states.items()
                if who != reviewer
            },
        }


def margin(record: Record) -> float | None:
    """How far the best candidate's score is ahead of the next: small means the ranker hesitated."""
    scores = sorted((c.score for c in record.candidates if c.score is not None), reverse=True)
    return round(scores[0] - scores[1], 6) if len(scores) >= 2 else None


def _writer(g: Any) -> dict[str, Any]:
    return {"role": g.role, "plugin": g.plugin, "model": g.model, "license": g.license}


def _drop_reason(record: Record) -> str:
    for e in reversed(record.provenance.events):
        if e.action == "dropped":
            return f"{e.plugin}: {e.reason}" if e.plugin else e.reason or "dropped"
    return "dropped"
