"""Reading an output folder back: per-stage counts, drop reasons, and the no-loss invariant."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distill.errors import StoreError
from distill.io.store import StageManifest, first_damaged_shard, manifest_problem, repair_hint
from distill.layout import MANIFEST, RUN_FILE


@dataclass
class StageReport:
    stage: str
    kind: str
    complete: bool
    shards: int
    totals: dict[str, int]
    reasons: dict[str, int]
    edits: dict[str, int] = field(default_factory=dict)
    balanced: bool = field(default=True)
    #: What is wrong with its committed files (a missing or corrupted shard); None when intact.
    damaged: str | None = None


def inspect_output(root: Path, *, verify: bool = True) -> list[StageReport]:
    """Per-stage reports; `verify` also checks every committed shard against its digest."""
    stages_dir = root / "stages"
    if not stages_dir.is_dir():
        raise StoreError(f"{root} is not a distill output folder (no stages/ inside)")
    order = _stage_order(root)
    manifests = []
    for d in stages_dir.iterdir():
        p = d / MANIFEST
        if not p.exists():
            continue
        try:
            manifests.append((d, StageManifest.model_validate_json(p.read_bytes())))
        except ValueError as exc:
            raise StoreError(
                f"manifest of stage {d.name!r} is corrupted ({p}): {manifest_problem(exc)}. {repair_hint(root)}"
            ) from None
    manifests.sort(key=lambda dm: (order.get(dm[1].stage, len(order)), dm[1].started_at))
    reports = []
    for d, m in manifests:
        t = m.totals()
        damage = first_damaged_shard(d, m) if verify else None
        reports.append(
            StageReport(
                m.stage,
                m.kind,
                m.complete,
                len(m.shards),
                t,
                dict(m.reasons().most_common()),
                dict(m.edits().most_common()),
                t["in"] + t["generated"] == t["kept"] + t["rejected"],
                f"shard {damage[1]} {damage[2]}" if damage else None,
            )
        )
    return reports


def _stage_order(root: Path) -> dict[str, int]:
    try:
        cfg = json.loads((root / RUN_FILE).read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    names = ["seeds"]
    counts: dict[str, int] = {}
    stages = cfg.get("stages", []) if isinstance(cfg, dict) else []
    for s in stages:
        counts[s.get("kind")] = counts.get(s.get("kind"), 0) + 1
    for i, s in enumerate(stages):
        names.append(s.get("name") or (s.get("kind") if counts[s.get("kind")] == 1 else f"{s.get('kind')}-{i}"))
    return {n: i for i, n in enumerate(names)}


def to_json(reports: list[StageReport]) -> str:
    return json.dumps([asdict(r) for r in reports], indent=2)
