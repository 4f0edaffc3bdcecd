"""A ranked run to review (questions, three echo answers each, scored by a reward function), and
decisions written as the page writes them."""

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


def decide(out: Path, record: str, reviewer: str, action: str, **fields: Any) -> Decision:
    d = Decision(id=uuid.uuid4().hex, record=record, reviewer=reviewer, action=action, **fields)
    DecisionLog(decisions_path(out, "ranked")).append(d)
    return d


@pytest.fixture(name="ranked")
def ranked_fixture(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """A ranked run in `tmp_path`; test modules import this fixture by name (a conftest.py here
    would shadow tests/conftest.py for the modules that import from it)."""
    cfg = ranked_config(tmp_path)
    pipeline(cfg).run()
    return cfg, tmp_path / "out"
