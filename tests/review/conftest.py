"""A ranked run to review: questions, three echo answers each, scored by a reward function."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
from util import config_dict, pipeline

from distill.review.decisions import Decision, DecisionLog, decisions_path


def ranked_config(folder: Path) -> dict[str, Any]:
    cfg = config_dict(folder)
    cfg["teachers"]["writer"]["options"]["n"] = 3
    cfg["stages"] = cfg["stages"][:2] + [
        {
            "kind": "rank",
            "name": "ranked",
            "ranker": {"plugin": "reward-function", "options": {"function": "reward_fns:prefers_short"}},
        }
    ]
    return cfg


def with_review(cfg: dict[str, Any], **review: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    cfg["stages"] += [
        {"kind": "review", "name": "reviewed", **review},
        {"kind": "export", "name": "prefs", "format": "preference"},
    ]
    return cfg


@pytest.fixture
def ranked(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    cfg = ranked_config(tmp_path)
    pipeline(cfg).run()
    return cfg, tmp_path / "out"


def decide(out: Path, record: str, reviewer: str, action: str, **fields: Any) -> Decision:
    d = Decision(id=uuid.uuid4().hex, record=record, reviewer=reviewer, action=action, **fields)
    DecisionLog(decisions_path(out, "ranked")).append(d)
    return d
