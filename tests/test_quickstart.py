"""The README's quickstart, as shipped, with the real embedded model (SmolLM2-135M-Instruct):
data, ranking, filters, a trained student, its evaluation against the base model and the
prompted teacher, the audit, the cards and the report, in one `distill run`.

This is the project's promise in one test: the student, answering *without* the system
prompt, must follow the task's rubric on held-out questions far better than the base model
and better than the teacher measured exactly as it wrote the data (system prompt and prefix).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.io.inspect import inspect_output
from distill.io.store import read_shards

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
STAGES = ["seeds", "questions", "new-questions", "answers", "ranked", "clean", "sft", "prefs"]


def _run(config: Path, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", "run", str(config), "--quiet"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_quickstart_student_beats_its_prompted_teacher(tmp_path, embedded_model_dir):
    for module in ("datasets", "trl", "peft"):
        pytest.importorskip(module, reason=f"the quickstart trains a student: pip install 'distill[train]' ({module})")
    work = tmp_path / "quickstart"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("out"))
    with open(work / "config.yaml", "a") as f:  # a cache of its own: the run must really generate
        f.write("\ncache: {path: requests.sqlite}\n")
    started = time.monotonic()
    r = _run(work / "config.yaml", 1500)
    seconds = time.monotonic() - started
    assert r.returncode == 0, r.stderr[-3000:]
    out = work / "out"
    assert re.search(r"report: .*report\.html", r.stdout)

    reports = {rep.stage: rep for rep in inspect_output(out)}
    assert list(reports) == STAGES
    for rep in reports.values():
        assert rep.complete and rep.balanced, rep
    assert reports["questions"].totals["generated"] > 0 and reports["clean"].totals["rejected"] > 0

    seeds = sum(1 for _ in open(work / "seeds.jsonl"))
    for stage in ("clean", "sft"):
        d = out / "stages" / stage
        m = json.loads((d / "manifest.json").read_text())
        for rec in read_shards(d, [s["kept_file"] for s in m["shards"]]):
            p = rec.provenance
            assert p.sources and all(s.license == "CC0-1.0" for s in p.sources)
            assert p.events and p.license.expression.startswith("CC0-1.0")
            for g in p.generators:  # generated questions and answers name the model that wrote them
                assert g.model == "HuggingFaceTB/SmolLM2-135M-Instruct" and g.license == "Apache-2.0"
                assert len(g.file_hash or "") == 64
    assert reports["sft"].totals["kept"] > seeds * 0.8  # seed answers kept as written, plus passing generations

    for export in ("sft", "prefs"):
        for card in ("README.md", "croissant.json", "NOTICE", "audit.json"):
            assert (out / "export" / export / card).is_file(), (export, card)
    student = out / "models" / "student" / "dpo"
    assert "**Verdict: cleared**" in (student / "README.md").read_text()

    ev = json.loads((out / "eval" / "eval" / "eval.json").read_text())
    assert len(ev["items"]) == 40 and sum(it["tags"]["topic"] == "off" for it in ev["items"]) == 20
    scores = {m["name"]: m["scores"] for m in ev["metrics"]}
    rubric = scores["rubric"]
    print(f"\nquickstart: {seconds:.0f} s; rubric {rubric}; perplexity {scores['perplexity']}")
    # The teacher is measured as it wrote the data (system prompt and prefix), and its best-of-4
    # ceiling uses the rubric at inference time; the student answers with neither.
    contenders = {c["name"]: c for c in ev["contenders"]}
    assert list(contenders) == ["base", "teacher", "teacher-best-of-4", "student"]
    assert contenders["teacher"]["system_prompt"] and contenders["teacher"]["prefix"] == "Acme Support:"
    assert contenders["teacher-best-of-4"]["best_of"] == 4 and contenders["teacher-best-of-4"]["ranker"]
    assert not contenders["student"]["system_prompt"] and contenders["student"]["prefix"] is None
    assert all(it["answers"]["teacher"].startswith("Acme Support:") for it in ev["items"])
    assert rubric["student"] >= 0.8 and rubric["base"] <= 0.2, rubric
    assert rubric["student"] > rubric["teacher"] and rubric["student"] > rubric["base"], rubric
    assert scores["perplexity"]["student"] < scores["perplexity"]["base"]

    page = (out / "report.html").read_text()
    for section in ("funnel", "training", "evaluation", "audit", "samples"):
        assert f'<section id="{section}"' in page, section

    audit = subprocess.run(
        [sys.executable, "-m", "distill.cli", "audit", str(out), "--json"], capture_output=True, text=True, timeout=300
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "acme-support" in audit.stdout and "CC0-1.0" in audit.stdout
    release = json.loads(audit.stdout)  # everything the run would release, one verdict each
    assert release["verdict"] == "cleared" and release["exit_code"] == 0
    artefacts = {a["artefact"]: a for a in release["artefacts"]}
    assert list(artefacts) == ["export sft", "export prefs", "student dpo (acme-support)"], list(artefacts)
    assert all(a["verdict"] == "cleared" for a in artefacts.values())
    assert [a["kind"] for a in artefacts.values()] == ["dataset", "dataset", "student"]
    assert artefacts["student dpo (acme-support)"]["release"]["what"] == "model"
    assert artefacts["export sft"]["records"] == reports["sft"].totals["kept"]
    # the student was fine-tuned on sft before DPO on prefs: both are in its verdict
    assert artefacts["student dpo (acme-support)"]["records"] >= artefacts["export sft"]["records"]

    again = _run(work / "config.yaml", 900)  # everything committed: nothing is generated or trained again
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("cached") == len(STAGES) + 2, again.stdout  # every stage and both train steps
