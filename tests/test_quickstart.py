"""The README's pipeline, as shipped, with the real embedded model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill.inspect import inspect_output
from distill.store import read_shards

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart"


def test_quickstart_runs_end_to_end_with_provenance_on_every_record(tmp_path, embedded_model_dir):
    datasets = pytest.importorskip("datasets", reason="the export needs the `datasets` extra")
    work = tmp_path / "quickstart"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("out"))
    with open(work / "config.yaml", "a") as f:  # a cache of its own: the run must really generate
        f.write("\ncache: {path: requests.sqlite}\n")
    r = subprocess.run([sys.executable, "-m", "distill.cli", "run", str(work / "config.yaml"), "--quiet"],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr
    out = work / "out"

    reports = {rep.stage: rep for rep in inspect_output(out)}
    assert list(reports) == ["seeds", "questions", "answers", "clean", "sft"]
    for rep in reports.values():
        assert rep.complete and rep.balanced, rep
    assert reports["questions"].totals["generated"] >= 16

    for stage in reports:
        d = out / "stages" / stage
        m = json.loads((d / "manifest.json").read_text())
        for rec in read_shards(d, [s["kept_file"] for s in m["shards"]]):
            p = rec.provenance
            assert p.sources and all(s.license == "CC0-1.0" for s in p.sources)
            assert p.events and p.license.expression
            if stage in ("answers", "clean", "sft"):
                (g,) = p.generators
                assert g.model == "HuggingFaceTB/SmolLM2-135M-Instruct" and g.license == "Apache-2.0"
                assert g.plugin == "transformers" and len(g.file_hash or "") == 64
                assert p.license.expression == "CC0-1.0 AND Apache-2.0" and p.license.use == "commercial"

    ds = datasets.load_from_disk(str(out / "export" / "sft"))
    assert len(ds) == reports["sft"].totals["kept"] > 0
    row = ds[0]
    assert row["messages"][-1]["role"] == "assistant" and row["messages"][0]["role"] == "user"

    for card in ("README.md", "croissant.json", "NOTICE"):
        assert (out / "export" / "sft" / card).is_file(), card
    audit = subprocess.run([sys.executable, "-m", "distill.cli", "audit", str(out), "--json"],
                           capture_output=True, text=True, timeout=300)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    assert "acme-support" in json.dumps(report) and "CC0-1.0" in json.dumps(report)

    again = subprocess.run([sys.executable, "-m", "distill.cli", "run", str(work / "config.yaml"), "--quiet"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("cached") == 5, again.stdout
