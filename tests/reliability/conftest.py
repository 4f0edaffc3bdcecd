"""Fixtures of the reliability suite, and its figures.

Every test adds what it did to one tally (trials run, kills, faults injected, records checked,
lost, duplicated, secrets found...). At the end of the session the tally is printed; when the
whole suite ran (every module, nothing deselected) it is also written to
benchmarks/results/reliability.json. $DISTILL_RELIABILITY_FIGURES names another file, which is
written whatever ran.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

import pytest

from .harness import plugin_site

ROOT = Path(__file__).resolve().parents[2]
FIGURES_FILE = ROOT / "benchmarks" / "results" / "reliability.json"
#: The figures the issue asks for, in the order they are printed.
HEADLINE = (
    "trials_run",
    "kills",
    "faults_injected",
    "records_checked",
    "lost",
    "duplicated",
    "secrets_found",
    "files_scanned",
)


class Figures:
    def __init__(self) -> None:
        self.partial = False
        self.total: Counter[str] = Counter()
        self.by_test: dict[str, Counter[str]] = {}
        self.notes: dict[str, str] = {}
        self.outcomes: Counter[str] = Counter()
        self.started = time.monotonic()
        self._current = "setup"

    def add(self, **counts: int) -> None:
        for k, v in counts.items():
            self.total[k] += int(v)
            self.by_test.setdefault(self._current, Counter())[k] += int(v)

    def note(self, key: str, value: str) -> None:
        self.notes[key] = value

    def as_dict(self) -> dict:
        total = {k: self.total.get(k, 0) for k in HEADLINE}
        total.update({k: v for k, v in sorted(self.total.items()) if k not in total})
        return {
            "figures": total,
            "tests": dict(self.outcomes),
            "seconds": round(time.monotonic() - self.started, 1),
            "notes": self.notes,
            "by_test": {t: dict(sorted(c.items())) for t, c in sorted(self.by_test.items())},
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "system": platform.system()},
        }


_FIGURES = Figures()

# Hypothesis keeps its example database and caches in ./.hypothesis; the suite derandomizes its
# examples, so keep that folder out of the repository, in a temporary one.
try:
    import atexit
    import shutil
    import tempfile

    from hypothesis import configuration as _hypothesis_configuration

    _HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="distill-hypothesis-")
    _hypothesis_configuration.set_hypothesis_home_dir(_HYPOTHESIS_HOME)
    atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
except ImportError:  # hypothesis is a dev dependency; without it the bad-input module fails to import
    pass


@pytest.fixture
def figures(request) -> Figures:
    _FIGURES._current = request.node.name
    return _FIGURES


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """PYTHONPATH and DISTILL_PLUGINS for a subprocess that should find the test plugins."""
    return plugin_site(tmp_path_factory.mktemp("plugin-site"))


def pytest_runtest_logreport(report) -> None:
    if "reliability/" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _FIGURES.outcomes["xfailed" if hasattr(report, "wasxfail") else report.outcome] += 1


def pytest_deselected(items) -> None:
    if any("reliability/" in item.nodeid for item in items):
        _FIGURES.partial = True


def pytest_collection_finish(session) -> None:
    here = Path(__file__).parent
    modules = {p.name for p in here.glob("test_*.py")}
    ran = {Path(str(item.fspath)).name for item in session.items if Path(str(item.fspath)).parent == here}
    if ran and ran != modules:
        _FIGURES.partial = True


def pytest_terminal_summary(terminalreporter) -> None:
    if not _FIGURES.by_test:
        return
    data = _FIGURES.as_dict()
    chosen = os.environ.get("DISTILL_RELIABILITY_FIGURES")
    path = Path(chosen) if chosen else None if _FIGURES.partial else FIGURES_FILE
    where = "not written (part of the suite ran)"
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1) + "\n")
            where = str(path)
        except OSError as exc:
            where = f"not written ({exc})"
    line = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in data["figures"].items() if k in HEADLINE)
    terminalreporter.write_sep("-", "reliability figures")
    terminalreporter.write_line(line)
    terminalreporter.write_line(f"tests: {data['tests']}; figures: {where}")
