"""The plugin-author example (examples/custom_plugin) as a user meets it: a separate package,
built and installed on its own, found through its entry points by the `distill` command.

The package goes into a temporary folder on PYTHONPATH, never into the dev venv, so no other
test sees its plugins; pip builds it from a copy, so the source tree gets no build/ or
egg-info debris.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.filter import Drop, Edit, Keep
from distill.records import Record
from distill.testing import make_record, run_filter

pytestmark = pytest.mark.slow  # installs a package and runs pipelines in subprocesses

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_plugin"
PACKAGE, VERSION = "distill-acme-plugins", "0.1.0"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example package installed into `site`, from a copy of the example in `src`."""
    work = tmp_path_factory.mktemp("acme")
    src, site = work / "src", work / "site"
    shutil.copytree(
        EXAMPLE, src, ignore=shutil.ignore_patterns("out", "build", "*.egg-info", "__pycache__", ".pytest_cache")
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(site),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (site / "acme_distill" / "faq.json").is_file(), "the FAQ table was not installed as package data"
    return {"work": work, "src": src, "site": site}


def _env(site: Path, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISTILL_PLUGINS", "DISTILL_STRICT_PLUGINS")}
    env.update(PYTHONPATH=str(site), DISTILL_CACHE_DIR=str(work / "cache"))
    return env


def distill(installed: dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", *args],
        capture_output=True,
        text=True,
        env=_env(installed["site"], installed["work"]),
        timeout=300,
    )


@pytest.fixture(scope="module")
def run_output(installed: dict[str, Path]) -> Path:
    """The example config run once, unchanged except that its output goes into a temp folder."""
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    out = installed["work"] / "out"
    config["output"] = str(out)
    config["seeds"][0]["path"] = str(EXAMPLE / config["seeds"][0]["path"])
    path = installed["work"] / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    r = distill(installed, "run", str(path), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    # Warnings only: the run log's stage lines (stderr is no terminal) name the filter's drops.
    warnings = [line for line in r.stderr.splitlines() if not re.match(r"\d\d:\d\d:\d\d stage ", line)]
    said = " ".join(" ".join(warnings).split())  # rich wraps long lines
    assert "terms are unknown" not in said, r.stderr  # the teacher reported its license
    assert not any(n in said for n in ("acme-faq", "acme-blocklist", "acme_distill")), r.stderr
    return out


def _records(folder: Path, kind: str) -> list[Record]:
    return [
        Record.model_validate_json(line)
        for f in sorted(folder.glob(f"{kind}-*.jsonl"))
        for line in f.read_text().splitlines()
        if line.strip()
    ]


def test_both_plugins_are_listed_with_their_package_and_version(installed):
    r = distill(installed, "plugins", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    found = {(p["kind"], p["name"]): p for p in data["plugins"] if p["package"] == PACKAGE}
    assert set(found) == {("teacher", "acme-faq"), ("filter", "acme-blocklist")}
    assert {p["version"] for p in found.values()} == {VERSION}
    assert found[("teacher", "acme-faq")]["entry_point"] == "acme-faq"
    assert {"terms", "field", "action"} <= set(found[("filter", "acme-blocklist")]["options"])
    assert not [f for f in data["failed"] if f["package"] == PACKAGE]
    # without the package on the path, neither exists: the listing above is the package's doing
    bare = subprocess.run(
        [sys.executable, "-m", "distill.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=_env(installed["work"] / "empty", installed["work"]),
        timeout=300,
    )
    assert PACKAGE not in bare.stdout


def test_the_pipeline_runs_and_inspect_accounts_for_every_record(installed, run_output):
    r = distill(installed, "inspect", str(run_output), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    stages = {s["stage"]: s for s in json.loads(r.stdout)}
    assert list(stages) == ["seeds", "answers", "clean", "sft"]
    assert all(s["complete"] and s["balanced"] for s in stages.values())
    for s in stages.values():  # nothing lost: every record that came in left kept or rejected
        t = s["totals"]
        assert t["in"] + t["generated"] == t["kept"] + t["rejected"], s
    assert stages["seeds"]["totals"]["kept"] == 8
    assert stages["answers"]["totals"] == {"in": 8, "generated": 0, "kept": 7, "rejected": 1}
    assert stages["answers"]["reasons"] == {"response: empty response": 1}
    assert stages["clean"]["totals"] == {"in": 7, "generated": 0, "kept": 5, "rejected": 2}
    assert stages["clean"]["reasons"] == {"acme-blocklist: blocked term": 2}
    assert stages["sft"]["totals"]["kept"] == 5


def test_the_custom_teacher_is_named_in_every_answers_provenance(run_output):
    table = (EXAMPLE / "acme_distill" / "faq.json").read_bytes()
    answered = _records(run_output / "stages" / "answers", "kept")
    assert len(answered) == 7
    for rec in answered:
        [g] = rec.provenance.generators
        assert (g.plugin, g.plugin_version, g.model, g.revision, g.license) == (
            "acme-faq",
            VERSION,
            "acme-router-faq",
            "2025.1",
            "CC0-1.0",
        )
        assert g.file_hash == hashlib.sha256(table).hexdigest()
        assert g.sampling == {"n": 2, "seed": 0, "fallback": ""}
        assert rec.response().startswith("Acme Support: ")
        assert len(rec.candidates) == 2 and rec.candidates[0].content != rec.candidates[1].content
        assert rec.provenance.license.use == "commercial"
    [unanswered] = _records(run_output / "stages" / "answers", "rejected")
    assert unanswered.prompt()[-1].content == "What is the capital of France?"


def test_the_filter_dropped_exactly_the_blocked_answers_with_its_reason(run_output):
    dropped = _records(run_output / "stages" / "clean", "rejected")
    events = {r.prompt()[-1].content: r.provenance.events[-1] for r in dropped}
    assert set(events) == {"Is an Acme router better than a NetGiant one?", "When can I buy a mesh system from Acme?"}
    for e in events.values():
        assert (e.action, e.plugin, e.plugin_version) == ("dropped", "acme-blocklist", VERSION)
    assert events["Is an Acme router better than a NetGiant one?"].reason == "blocked term: 'NetGiant' in response"
    assert events["When can I buy a mesh system from Acme?"].reason.startswith("blocked term: 'Project Falcon' in ")
    exported = _records(run_output / "stages" / "sft", "kept")
    assert len(exported) == 5
    text = json.dumps([r.model_dump(mode="json") for r in exported])
    assert "NetGiant" not in text and "Project Falcon" not in text
    assert (run_output / "export" / "sft").is_dir()


@pytest.fixture
def acme(installed, monkeypatch):
    """The installed package, importable in this process for the duration of one test."""
    monkeypatch.syspath_prepend(str(installed["site"]))
    import acme_distill.blocklist

    return acme_distill.blocklist


def test_the_filter_under_distill_testing_run_filter(acme):
    f = acme.BlocklistFilter(terms=["NetGiant"])
    records = [
        make_record("Which router?", "Acme."),
        make_record("Which router?", "Not a NetGiant."),
        make_record("Which router?"),
    ]
    assert run_filter(f, records) == [
        Keep(),
        Drop("blocked term: 'NetGiant' in response"),
        Drop("missing field: no response to check"),
    ]
    masked = run_filter(acme.BlocklistFilter(terms=["NetGiant"], action="mask"), records[:2])
    assert masked[0] == Keep() and isinstance(masked[1], Edit)
    assert masked[1].record.response() == "Not a [blocked]." and records[1].response() == "Not a NetGiant."


def test_the_packages_own_unit_tests_pass(installed):
    """The tests the tutorial shows, run as the package's author would run them."""
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=installed["src"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(installed["site"], installed["work"]),
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout
