"""The `distill` command as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from util import QUESTIONS, dump, write_seeds


def distill(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def _config(tmp_path) -> dict:
    seeds = write_seeds(tmp_path)
    return {
        "output": "out",
        "cache": {"path": "requests.sqlite"},
        "seeds": [{"path": seeds.name, "license": "CC0-1.0"}],
        "stages": [
            {
                "kind": "filter",
                "filters": [{"plugin": "length", "options": {"field": "prompt", "min_words": 8}}, "exact-dedup"],
            },
            {"kind": "export", "format": "sft"},
        ],
    }


@pytest.mark.slow  # runs the CLI pipeline in a subprocess
def test_run_then_inspect(tmp_path):
    cfg = _config(tmp_path)
    r = distill("run", str(dump(tmp_path, cfg)), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "filter" in r.stdout and "output:" in r.stdout
    r = distill("inspect", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr
    stages = {s["stage"]: s for s in json.loads(r.stdout)}
    assert list(stages) == ["seeds", "filter", "export"]
    assert stages["seeds"]["totals"]["kept"] == len(QUESTIONS)
    short = sum(len(q.split()) < 8 for q in QUESTIONS)
    assert 0 < short < len(QUESTIONS)
    assert stages["filter"]["totals"]["rejected"] == short
    assert stages["filter"]["reasons"] == {"length: prompt too short": short}
    assert stages["export"]["totals"]["kept"] == 0  # no responses: nothing to train on, all rejected
    assert all(s["balanced"] and s["complete"] for s in stages.values())
    r = distill("inspect", str(tmp_path / "out"))
    assert "rejected in filter" in r.stdout and "prompt too short" in r.stdout


def test_config_error_names_the_key_and_exits_non_zero(tmp_path):
    cfg = _config(tmp_path)
    cfg["stages"][0]["filters"][0]["options"]["min_wrods"] = 1
    r = distill("run", str(dump(tmp_path, cfg)))
    assert r.returncode == 2
    assert "stages[0].filters[0].options.min_wrods: unknown key (did you mean 'min_words'?)" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_plugin_lists_the_known_ones(tmp_path):
    cfg = _config(tmp_path)
    cfg["stages"][0]["filters"][1] = "dedup"
    r = distill("run", str(dump(tmp_path, cfg)))
    assert r.returncode == 2 and "unknown filter plugin 'dedup'" in r.stderr and "exact-dedup" in r.stderr


def test_plugins_lists_first_party_plugins():
    r = distill("plugins", "--json")
    assert r.returncode == 0, r.stderr
    names = {(p["kind"], p["name"]) for p in json.loads(r.stdout)["plugins"]}
    assert {("task", "response"), ("task", "self-instruct"), ("filter", "length"), ("filter", "exact-dedup")} <= names


def test_the_plugins_table_shows_option_defaults_in_brackets_as_text(tmp_path):
    import os

    site = tmp_path / "site"
    (site / "maskplug-0.1.dist-info").mkdir(parents=True)
    (site / "maskplug-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: maskplug\nVersion: 0.1\n")
    (site / "maskplug-0.1.dist-info" / "entry_points.txt").write_text("[distill]\nmask = maskplug_mod\n")
    (site / "maskplug_mod.py").write_text(
        "from distill.filter import Filter, Keep\nfrom distill.hookspecs import hookimpl\nfrom distill.plugin import Options\n"
        "class Mask(Filter):\n    name = 'mask-it'\n    class Options(Options):\n        mask_with: str = '[blocked]'\n"
        "    def check(self, record):\n        return Keep()\n"
        "@hookimpl\ndef register_filters(register):\n    register(Mask)\n"
    )
    r = distill("plugins", env={**os.environ, "PYTHONPATH": str(site), "COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    assert "mask_with='[blocked]'" in r.stdout  # rich would read `[blocked]` as markup and drop it


def test_a_broken_third_party_plugin_does_not_break_the_cli(tmp_path):
    import os

    site = tmp_path / "site"
    (site / "brokenplug-0.1.dist-info").mkdir(parents=True)
    (site / "brokenplug-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: brokenplug\nVersion: 0.1\n"
    )
    (site / "brokenplug-0.1.dist-info" / "entry_points.txt").write_text("[distill]\nbroken = brokenplug_mod\n")
    (site / "brokenplug_mod.py").write_text("raise RuntimeError('plugin bug')\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = distill("plugins", env=env)
    assert r.returncode == 0 and "exact-dedup" in r.stdout
    assert "plugin 'broken' (brokenplug) was skipped" in r.stderr and "plugin bug" in r.stderr
    r = distill("plugins", "--strict", env=env)
    assert r.returncode == 1 and "plugin 'broken'" in r.stderr
    r = distill("--help", env=env)
    assert r.returncode == 0


def test_schema_command_prints_json():
    r = distill("schema", "record")
    assert r.returncode == 0 and json.loads(r.stdout)["title"] == "distill record"
    assert distill("schema", "nope").returncode == 2


def test_an_unwritable_output_is_a_clear_error(tmp_path):
    cfg = _config(tmp_path)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    cfg["output"] = "blocker/out"
    r = distill("run", str(dump(tmp_path, cfg)))
    assert r.returncode == 1 and "cannot write the output folder" in r.stderr and "Traceback" not in r.stderr
